//! Maps driver errors onto the core's [`StoreErrorKind`], which decides whether the
//! engine retries, reconciles or backs off. The classification follows the server's
//! error codes and labels (change-streams and retryable-writes specifications); the
//! message is the driver's, with any password removed.

use mongodb::error::{Error, ErrorKind, WriteFailure};

use crate::core::error::{StoreError, StoreErrorKind};
use crate::mongo::uri::redact_text;

/// 286 ChangeStreamHistoryLost: the resume point has left the oplog.
pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
/// 260 InvalidResumeToken: the token cannot be used (malformed, or after an invalidate).
pub const INVALID_RESUME_TOKEN: i32 = 260;
/// 11000 DuplicateKey.
pub const DUPLICATE_KEY: i32 = 11000;

/// Codes the server labels resumable / retryable (network-ish, failover, shutdown,
/// interruption), plus cursor loss (43) and time limits (50), which a retry also cures.
const TRANSIENT_CODES: [i32; 19] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234, 133, 43,
    50,
];

/// Labels that mean "the same operation may succeed if retried".
const TRANSIENT_LABELS: [&str; 4] = [
    "RetryableWriteError",
    "ResumableChangeStreamError",
    "TransientTransactionError",
    "RetryableError",
];

/// Coarse shape of a driver error, for [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Socket, DNS, pool-cleared or server-selection failure, or a timeout.
    Network,
    /// Anything else (a server reply, a client-side check, a (de)serialisation error).
    Other,
}

/// Classification by server code, error labels and failure shape.
pub fn classify(code: Option<i32>, labels: &[&str], failure: Failure) -> StoreErrorKind {
    match code {
        Some(CHANGE_STREAM_HISTORY_LOST | INVALID_RESUME_TOKEN) => StoreErrorKind::HistoryLost,
        Some(c) if TRANSIENT_CODES.contains(&c) => StoreErrorKind::Transient,
        _ if labels.iter().any(|l| TRANSIENT_LABELS.contains(l)) => StoreErrorKind::Transient,
        _ if failure == Failure::Network => StoreErrorKind::Transient,
        _ => StoreErrorKind::Fatal,
    }
}

/// The server error code carried by `err` or by the errors it wraps.
pub fn error_code(err: &Error) -> Option<i32> {
    let own = match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|es| es.first().map(|e| e.code))
            .or(m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    };
    own.or_else(|| {
        std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<Error>())
            .and_then(error_code)
    })
}

/// Whether `err` is a network-level failure (no server reply to judge by).
fn failure_of(err: &Error) -> Failure {
    match err.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => Failure::Network,
        _ => Failure::Other,
    }
}

/// Maps a driver error to a core error. `context` says what was being done
/// (e.g. `"scan app.items"`); `uris` are connection strings whose passwords must not
/// appear (embedded URIs are redacted regardless).
pub fn map_error(err: &Error, context: &str, uris: &[&str]) -> StoreError {
    let labels: Vec<&str> = err.labels().iter().map(String::as_str).collect();
    let kind = classify(error_code(err), &labels, failure_of(err));
    let mut message = format!("{context}: {}", err.kind);
    if !labels.is_empty() {
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        message.push_str(&format!(" [labels: {}]", sorted.join(", ")));
    }
    StoreError::new(kind, redact_text(&message, uris))
}

/// A stream that ended because the watched namespace went away.
pub fn invalidated(what: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Invalidated, what.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bson::doc;
    use mongodb::error::CommandError;

    use super::*;

    fn command_error(code: i32) -> Error {
        let ce: CommandError =
            bson::from_document(doc! {"code": code, "codeName": "X", "errmsg": "boom"}).unwrap();
        Error::from(ErrorKind::Command(ce))
    }

    #[test]
    fn history_lost_codes_map_to_history_lost() {
        for code in [286, 260] {
            let e = map_error(&command_error(code), "watch", &[]);
            assert_eq!(e.kind, StoreErrorKind::HistoryLost, "code {code}");
            assert!(e.is_history_lost());
        }
    }

    #[test]
    fn resumable_codes_map_to_transient() {
        for code in [
            6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234,
            133,
        ] {
            assert_eq!(
                map_error(&command_error(code), "op", &[]).kind,
                StoreErrorKind::Transient,
                "code {code}"
            );
        }
    }

    #[test]
    fn other_server_errors_are_fatal() {
        for code in [2, 13, 18, 26, 11000] {
            assert_eq!(
                map_error(&command_error(code), "op", &[]).kind,
                StoreErrorKind::Fatal,
                "code {code}"
            );
        }
    }

    #[test]
    fn io_errors_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::from(ErrorKind::Io(Arc::new(io)));
        assert_eq!(map_error(&e, "find", &[]).kind, StoreErrorKind::Transient);
    }

    #[test]
    fn labels_alone_make_an_error_transient() {
        for label in [
            "RetryableWriteError",
            "ResumableChangeStreamError",
            "TransientTransactionError",
        ] {
            assert_eq!(
                classify(Some(12345), &[label], Failure::Other),
                StoreErrorKind::Transient
            );
        }
        assert_eq!(
            classify(None, &[], Failure::Network),
            StoreErrorKind::Transient
        );
        assert_eq!(
            classify(None, &["Other"], Failure::Other),
            StoreErrorKind::Fatal
        );
    }

    #[test]
    fn mapped_message_hides_passwords() {
        let ce: CommandError = bson::from_document(doc! {
            "code": 18, "codeName": "AuthenticationFailed",
            "errmsg": "bad login for mongodb://app:Pa55word@db:27017/x"
        })
        .unwrap();
        let e = map_error(
            &Error::from(ErrorKind::Command(ce)),
            "connect mongodb://app:Pa55word@db:27017/x",
            &["mongodb://app:Pa55word@db:27017/x"],
        );
        assert!(!e.message.contains("Pa55word"), "{}", e.message);
        assert!(e.message.contains("app:***@db"), "{}", e.message);
        assert_eq!(e.kind, StoreErrorKind::Fatal);
    }
}
