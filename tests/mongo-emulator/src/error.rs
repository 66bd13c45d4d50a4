//! Command errors as MongoDB shapes them (`{ok: 0, errmsg, code, codeName,
//! errorLabels?}` plus per-code extras such as `keyPattern`/`keyValue` for 11000), and
//! the table of code names and error labels the server attaches.

use bson::{doc, Bson, Document};

use crate::query::QueryError;

/// A failed command or write statement.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    /// MongoDB error code.
    pub code: i32,
    /// MongoDB code name.
    pub code_name: &'static str,
    /// Human message (`errmsg`).
    pub message: String,
    /// Extra reply fields (`keyPattern`, `keyValue` for duplicate keys); boxed to keep
    /// `Result`s small.
    pub extra: Option<Box<Document>>,
    /// Error labels (`RetryableWriteError`, `ResumableChangeStreamError`).
    pub labels: Vec<String>,
}

/// Result type of command handlers.
pub type CmdResult<T> = Result<T, CommandError>;

impl CommandError {
    /// An error with the standard code name for `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        let mut labels = Vec::new();
        // The server marks a change stream it can never resume (ChangeStreamFatalError).
        if code == 280 {
            labels.push("NonResumableChangeStreamError".to_string());
        }
        CommandError {
            code,
            code_name: code_name(code),
            message: message.into(),
            extra: None,
            labels,
        }
    }
    /// Add an extra reply field.
    pub fn with_extra(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key, value.into());
        self
    }
    /// 2 BadValue.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }
    /// 14 TypeMismatch for a field of the wrong type.
    pub fn type_mismatch(field: &str, expected: &str) -> Self {
        Self::new(
            14,
            format!("BSON field '{field}' is the wrong type, expected type '{expected}'"),
        )
    }
    /// 9 FailedToParse.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, message)
    }
    /// Add the labels MongoDB attaches to `code` for the command `command`, run inside
    /// a multi-document transaction when `in_txn` (server `error_labels.cpp`: in a
    /// transaction `TransientTransactionError` replaces `RetryableWriteError`, except
    /// that `commitTransaction`/`abortTransaction` are retryable).
    pub fn with_server_labels(mut self, command: &str, in_txn: bool) -> Self {
        let ends_txn = matches!(command, "commitTransaction" | "abortTransaction");
        if in_txn && is_transient(self.code, ends_txn, false) {
            self.add_label(crate::txn::TRANSIENT);
        }
        let is_write = matches!(command, "insert" | "update" | "delete" | "findAndModify");
        if (ends_txn || (is_write && !in_txn)) && RETRYABLE_WRITE_CODES.contains(&self.code) {
            self.add_label("RetryableWriteError");
        }
        if matches!(command, "getMore" | "aggregate") && RESUMABLE_CODES.contains(&self.code) {
            self.add_label("ResumableChangeStreamError");
        }
        self
    }
    fn add_label(&mut self, label: &str) {
        if !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
    }
    /// The reply body (without `operationTime`/`$clusterTime`).
    pub fn to_reply(&self) -> Document {
        let mut d = doc! {
            "ok": 0.0,
            "errmsg": self.message.clone(),
            "code": self.code,
            "codeName": self.code_name,
        };
        for (k, v) in self.extra.iter().flat_map(|e| e.iter()) {
            d.insert(k.clone(), v.clone());
        }
        if !self.labels.is_empty() {
            let labels: Vec<Bson> = self
                .labels
                .iter()
                .map(|l| Bson::String(l.clone()))
                .collect();
            d.insert("errorLabels", labels);
        }
        d
    }
    /// The `writeErrors` entry for statement `index`.
    pub fn to_write_error(&self, index: usize) -> Document {
        let mut d = doc! { "index": index as i32, "code": self.code };
        for (k, v) in self.extra.iter().flat_map(|e| e.iter()) {
            d.insert(k.clone(), v.clone());
        }
        d.insert("errmsg", self.message.clone());
        d
    }
}

impl From<QueryError> for CommandError {
    fn from(e: QueryError) -> Self {
        CommandError {
            code: e.code,
            code_name: e.code_name,
            message: e.message,
            extra: None,
            labels: Vec::new(),
        }
    }
}

/// Whether `code` gets `TransientTransactionError` on a command of a transaction
/// (`ends_txn`: `commitTransaction`/`abortTransaction`; `wce`: the reply has a write
/// concern error).
pub fn is_transient(code: i32, ends_txn: bool, wce: bool) -> bool {
    // WriteConflict, LockTimeout, PreparedTransactionInProgress and the snapshot errors
    // (SnapshotTooOld, SnapshotUnavailable, StaleChunkHistory).
    if matches!(code, 112 | 24 | 267 | 239 | 246 | 283) {
        return true;
    }
    if ends_txn {
        code == 251 && !wce
    } else {
        code == 251 || RETRYABLE_WRITE_CODES.contains(&code)
    }
}

/// Codes that get `RetryableWriteError` on write commands (MongoDB 4.4+).
pub const RETRYABLE_WRITE_CODES: &[i32] = &[
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Codes that get `ResumableChangeStreamError` on change stream commands.
pub const RESUMABLE_CODES: &[i32] = &[
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234, 133,
];

/// MongoDB's code name for `code` (from the server's `error_codes.yml`).
pub fn code_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        2 => "BadValue",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        20 => "IllegalOperation",
        24 => "LockTimeout",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        40 => "ConflictingUpdateOperators",
        43 => "CursorNotFound",
        47 => "NoMatchingDocument",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        52 => "DollarPrefixedFieldName",
        59 => "CommandNotFound",
        63 => "StaleShardVersion",
        66 => "ImmutableField",
        67 => "CannotCreateIndex",
        72 => "InvalidOptions",
        73 => "InvalidNamespace",
        85 => "IndexOptionsConflict",
        86 => "IndexKeySpecsConflict",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        112 => "WriteConflict",
        117 => "ConflictingOperationInProgress",
        133 => "FailedToSatisfyReadPreference",
        150 => "StaleEpoch",
        189 => "PrimarySteppedDown",
        225 => "TransactionTooOld",
        234 => "RetryChangeStream",
        239 => "SnapshotTooOld",
        246 => "SnapshotUnavailable",
        251 => "NoSuchTransaction",
        256 => "TransactionCommitted",
        263 => "OperationNotSupportedInTransaction",
        267 => "PreparedTransactionInProgress",
        283 => "StaleChunkHistory",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        7182500 => "Location7182500",
        7182502 => "Location7182502",
        7182800 => "Location7182800",
        7182802 => "Location7182802",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        10334 => "BSONObjectTooLarge",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        13388 => "StaleConfig",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        31254 => "Location31254",
        40324 => "Location40324",
        40414 => "Location40414",
        40415 => "Location40415",
        40674 => "Location40674",
        40573 => "Location40573",
        50768 => "Location50768",
        _ => "UnknownError",
    }
}
