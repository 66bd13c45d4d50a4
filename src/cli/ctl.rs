//! `datasync ctl`: one request to the daemon's admin socket, printed for humans or as
//! the daemon's JSON (`--json`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use datasync::core::ReconcileReport;
use datasync::daemon::admin::client;
use datasync::daemon::admin::{AdminRequest, StatusReply};
use serde_json::Value;

use super::args::CtlRequest;
use super::report::{report_text, status_text};
use super::{EXIT_FAILURE, EXIT_UNREACHABLE};

/// Run `ctl`.
pub async fn ctl(socket: &Path, json: bool, request: CtlRequest) -> ExitCode {
    let request = match request {
        CtlRequest::Status => AdminRequest::Status,
        CtlRequest::Pause => AdminRequest::Pause,
        CtlRequest::Resume => AdminRequest::Resume,
        CtlRequest::Sync {
            mode,
            dry_run,
            pair,
        } => AdminRequest::Sync {
            mode: mode.map(Into::into),
            dry_run,
            pair,
        },
    };
    let reply = match client::request(socket, &request, Duration::from_secs(5)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("datasync ctl: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let ok = reply.get("ok") == Some(&Value::Bool(true));
    if json {
        println!("{reply}");
    } else if !ok {
        let err = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        eprintln!("datasync ctl: daemon answered: {err}");
    } else {
        println!("{}", human(&request, &reply));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn human(request: &AdminRequest, reply: &Value) -> String {
    match request {
        AdminRequest::Status => serde_json::from_value::<StatusReply>(reply.clone())
            .map(|s| status_text(&s))
            .unwrap_or_else(|_| reply.to_string()),
        AdminRequest::Sync { .. } => reply
            .get("report")
            .and_then(|r| serde_json::from_value::<ReconcileReport>(r.clone()).ok())
            .map(|r| report_text(&r))
            .unwrap_or_else(|| reply.to_string()),
        AdminRequest::Pause => "paused".into(),
        AdminRequest::Resume => "resumed".into(),
    }
}
