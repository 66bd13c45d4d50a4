//! The client side of the admin socket, used by `datasync ctl` and tests: send one
//! request line, read one reply line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::AdminRequest;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect (no daemon, wrong path, permissions).
    #[error("cannot connect to the daemon at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Connected, but the exchange failed.
    #[error("admin socket {path}: {message}")]
    Exchange {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Send `request` to the daemon at `socket` and return its JSON reply. Connecting times
/// out after `connect_timeout`; the reply is awaited without limit (a `sync` lasts as
/// long as the reconcile).
pub async fn request(
    socket: &Path,
    request: &AdminRequest,
    connect_timeout: Duration,
) -> Result<Value, ClientError> {
    request_line(socket, &request.to_json(), connect_timeout).await
}

/// Send a raw line (tests use it for malformed requests).
pub async fn request_line(
    socket: &Path,
    line: &str,
    connect_timeout: Duration,
) -> Result<Value, ClientError> {
    let exchange = |message: String| ClientError::Exchange {
        path: socket.to_path_buf(),
        message,
    };
    let stream = tokio::time::timeout(connect_timeout, UnixStream::connect(socket))
        .await
        .map_err(|_| ClientError::Connect {
            path: socket.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    // The daemon may refuse a connection (other user, too many connections) with a
    // reply before reading anything: a failed write still leaves that reply to read.
    let sent = write.write_all(format!("{line}\n").as_bytes()).await;
    let mut reply = String::new();
    BufReader::new(read)
        .read_line(&mut reply)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    if reply.is_empty() {
        return Err(exchange(match sent {
            Err(e) => e.to_string(),
            Ok(()) => "connection closed without a reply".into(),
        }));
    }
    serde_json::from_str(&reply).map_err(|e| exchange(format!("invalid reply: {e}")))
}
