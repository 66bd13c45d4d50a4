//! `configureFailPoint` (a test command MongoDB enables with `enableTestCommands`), as
//! driver test suites use it: `failCommand` with `mode` (`alwaysOn`, `off`, `{times}`,
//! `{skip}`) and `data` (`failCommands`, `errorCode`, `errorLabels`,
//! `closeConnection`, `blockConnection`/`blockTimeMS`, `writeConcernError`,
//! `appName`); `failGetMoreAfterCursorCheckout` fails `getMore` with `errorCode`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bson::{Bson, Document};

use crate::error::{CmdResult, CommandError};

/// How often a fail point fires.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Every matching command.
    AlwaysOn,
    /// The next `n` matching commands.
    Times(u64),
    /// Every matching command after the next `n`.
    Skip(u64),
}

/// One active `failCommand`.
#[derive(Debug, Clone)]
struct FailCommand {
    /// The error is raised after the cursor was checked out
    /// (`failGetMoreAfterCursorCheckout`), where the server knows a change stream's
    /// cursor and labels resumable errors; `failCommand` fails before that.
    after_checkout: bool,
    /// When it fires.
    mode: Mode,
    /// Commands it applies to.
    commands: Vec<String>,
    /// Only for connections whose handshake named this application.
    app_name: Option<String>,
    /// Error to answer with.
    error_code: Option<i32>,
    /// Labels replacing the server's own (when given).
    error_labels: Option<Vec<String>>,
    /// Close the connection instead of answering.
    close_connection: bool,
    /// Hold the command this long first.
    block: Option<Duration>,
    /// Answer success with this write concern error (after running the command).
    write_concern_error: Option<Document>,
}

/// What a fired fail point does to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Close the connection without a reply.
    Close,
    /// Wait, then go on (with any other action).
    Block(Duration, Box<Action>),
    /// Answer this error.
    Fail(CommandError),
    /// Run the command, then add `writeConcernError`.
    WriteConcernError(Document),
    /// Run the command normally.
    Proceed,
}

/// Active fail points by name.
#[derive(Debug, Default)]
pub struct FailPoints {
    /// `failCommand` and `failGetMoreAfterCursorCheckout` (stored as a `failCommand`
    /// on `getMore`).
    points: Mutex<HashMap<String, FailCommand>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Tiny critical sections: a panic leaves consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FailPoints {
    /// `configureFailPoint`; the reply's `count` is how often the point had fired
    /// before (always 0 here: not tracked).
    pub fn configure(&self, body: &Document) -> CmdResult<Document> {
        let name = body
            .get_str("configureFailPoint")
            .map_err(|_| CommandError::type_mismatch("configureFailPoint", "string"))?;
        if !matches!(name, "failCommand" | "failGetMoreAfterCursorCheckout") {
            return Err(CommandError::bad_value(format!(
                "Cannot configure fail point '{name}': not supported by the emulator"
            )));
        }
        let mode = match body.get("mode") {
            Some(Bson::String(s)) if s == "alwaysOn" => Some(Mode::AlwaysOn),
            Some(Bson::String(s)) if s == "off" => None,
            Some(Bson::Document(d)) => match (count(d, "times")?, count(d, "skip")?) {
                (Some(0), _) => None,
                (Some(n), _) => Some(Mode::Times(n)),
                (None, Some(n)) => Some(Mode::Skip(n)),
                (None, None) => return Err(CommandError::bad_value("mode needs times or skip")),
            },
            _ => return Err(CommandError::bad_value("invalid fail point mode")),
        };
        let mut points = lock(&self.points);
        let Some(mode) = mode else {
            points.remove(name);
            return Ok(bson::doc! {"count": 0});
        };
        let data = match body.get("data") {
            Some(Bson::Document(d)) => d.clone(),
            None => Document::new(),
            Some(_) => return Err(CommandError::type_mismatch("data", "object")),
        };
        let commands = if name == "failGetMoreAfterCursorCheckout" {
            vec!["getMore".to_string()]
        } else {
            match data.get("failCommands") {
                Some(Bson::Array(a)) => a
                    .iter()
                    .map(|c| c.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        CommandError::type_mismatch("failCommands", "array of strings")
                    })?,
                _ => {
                    return Err(CommandError::bad_value(
                        "failCommand needs data.failCommands",
                    ))
                }
            }
        };
        let labels = match data.get("errorLabels") {
            Some(Bson::Array(a)) => Some(
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => None,
        };
        let block = data.get_bool("blockConnection").unwrap_or(false).then(|| {
            let ms = number(data.get("blockTimeMS")).unwrap_or(0).max(0);
            Duration::from_millis(ms as u64)
        });
        points.insert(
            name.to_string(),
            FailCommand {
                after_checkout: name == "failGetMoreAfterCursorCheckout",
                mode,
                commands,
                app_name: data.get_str("appName").ok().map(str::to_string),
                error_code: number(data.get("errorCode")).map(|c| c as i32),
                error_labels: labels,
                close_connection: data.get_bool("closeConnection").unwrap_or(false),
                block,
                write_concern_error: data.get_document("writeConcernError").ok().cloned(),
            },
        );
        Ok(bson::doc! {"count": 0})
    }

    /// What the active fail points do to `command` on a connection of `app`
    /// (consuming one firing).
    pub fn check(&self, command: &str, app: Option<&str>, in_txn: bool) -> Action {
        let mut points = lock(&self.points);
        let mut fired = None;
        let mut exhausted = None;
        for (name, p) in points.iter_mut() {
            if !p.commands.iter().any(|c| c == command) {
                continue;
            }
            if p.app_name.as_deref().is_some_and(|want| Some(want) != app) {
                continue;
            }
            match &mut p.mode {
                Mode::AlwaysOn => {}
                Mode::Skip(n) if *n > 0 => {
                    *n -= 1;
                    continue;
                }
                Mode::Skip(_) => {}
                Mode::Times(n) => {
                    *n -= 1;
                    if *n == 0 {
                        exhausted = Some(name.clone());
                    }
                }
            }
            fired = Some(p.clone());
            break;
        }
        if let Some(name) = exhausted {
            points.remove(&name);
        }
        let Some(p) = fired else {
            return Action::Proceed;
        };
        let action = if p.close_connection {
            Action::Close
        } else if let Some(code) = p.error_code {
            let mut err = CommandError::new(
                code,
                format!("Failing command {command} via 'failCommand' failpoint"),
            );
            match &p.error_labels {
                Some(labels) => err.labels = labels.clone(),
                None if command == "getMore" && !p.after_checkout => {}
                None => err = err.with_server_labels(command, in_txn),
            }
            Action::Fail(err)
        } else if let Some(wce) = p.write_concern_error {
            Action::WriteConcernError(wce)
        } else {
            Action::Proceed
        };
        match p.block {
            Some(d) => Action::Block(d, Box::new(action)),
            None => action,
        }
    }
}

fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn count(d: &Document, key: &str) -> CmdResult<Option<u64>> {
    match d.get(key) {
        None => Ok(None),
        v => number(v)
            .map(|n| Some(n.max(0) as u64))
            .ok_or_else(|| CommandError::type_mismatch(key, "int")),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn times_fires_that_often_then_the_point_is_off() {
        let fp = FailPoints::default();
        fp.configure(
            &doc! {"configureFailPoint": "failCommand", "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "errorCode": 91}},
        )
        .unwrap();
        assert_eq!(fp.check("find", None, false), Action::Proceed);
        for _ in 0..2 {
            let Action::Fail(e) = fp.check("insert", None, false) else {
                panic!("fires")
            };
            assert_eq!(e.code, 91);
            assert_eq!(e.labels, ["RetryableWriteError"]);
        }
        assert_eq!(fp.check("insert", None, false), Action::Proceed);
    }

    #[test]
    fn skip_labels_close_and_app_name() {
        let fp = FailPoints::default();
        fp.configure(
            &doc! {"configureFailPoint": "failCommand", "mode": {"skip": 1},
            "data": {"failCommands": ["getMore"], "errorCode": 280, "errorLabels": []}},
        )
        .unwrap();
        assert_eq!(fp.check("getMore", None, false), Action::Proceed);
        let Action::Fail(e) = fp.check("getMore", None, false) else {
            panic!("fires")
        };
        assert!(e.labels.is_empty(), "given labels replace the server's");
        fp.configure(
            &doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn",
            "data": {"failCommands": ["ping"], "closeConnection": true, "appName": "a"}},
        )
        .unwrap();
        assert_eq!(fp.check("ping", Some("b"), false), Action::Proceed);
        assert_eq!(fp.check("ping", Some("a"), false), Action::Close);
        fp.configure(&doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .unwrap();
        assert_eq!(fp.check("ping", Some("a"), false), Action::Proceed);
    }
}
