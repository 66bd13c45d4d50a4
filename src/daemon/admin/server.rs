//! The admin socket server: binds the Unix socket safely (parent created, stale file
//! removed only when nobody listens, mode 0600 before the first accept, removed on
//! exit), checks the peer's uid, and turns each request line into a [`Control`].

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::line::{read_line_bounded, Line};
use super::protocol::{parse_request, AdminReply, MAX_LINE};
use crate::daemon::control::Control;

/// Limits protecting the daemon from misbehaving clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are told so and closed.
    pub max_connections: usize,
    /// A connection that sends no complete request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Another process answers on the socket path.
    #[error("admin socket {0} is in use by another process (is a daemon already running?)")]
    InUse(PathBuf),
    /// The path exists and is not a socket: refuse to delete it.
    #[error("admin socket path {0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Filesystem error.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Removes the socket file when dropped, if it is still the one we created.
#[derive(Debug)]
struct SocketFile {
    /// The path.
    path: PathBuf,
    /// Inode of the file we bound, so we never delete a successor's socket.
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound admin socket, ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    /// The listening socket.
    listener: UnixListener,
    /// Removes the file on drop.
    file: SocketFile,
    /// Our uid (owner of the socket file); peers must match or be root.
    owner_uid: u32,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AdminError + '_ {
    move |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AdminServer {
    /// Bind `path` (creating its parent directory, mode 0700 when created).
    pub fn bind(path: &Path) -> Result<AdminServer, AdminError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(AdminError::InUse(path.to_path_buf())),
                    Err(_) => {
                        tracing::info!(path = %path.display(), "removing stale admin socket");
                        std::fs::remove_file(path).map_err(io_err(path))?;
                    }
                }
            }
            Ok(_) => return Err(AdminError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err(path))?;
        // chmod before the first accept; connections made in between are still subject
        // to the peer uid check below.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
        Ok(AdminServer {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                ino: meta.ino(),
            },
            owner_uid: meta.uid(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Accept and serve connections until `shutdown`; the socket file is removed when
    /// this returns.
    pub async fn serve(
        self,
        control: mpsc::Sender<Control>,
        shutdown: CancellationToken,
        limits: Limits,
    ) {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let conns = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let mut stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == self.owner_uid || cred.uid() == 0 => {}
                Ok(cred) => {
                    tracing::warn!(uid = cred.uid(), "admin connection refused: other user");
                    let _ =
                        reply(&mut stream, &AdminReply::Error("permission denied".into())).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin connection refused: no peer credentials");
                    continue;
                }
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                let busy = AdminReply::Error("too many admin connections, try again".into());
                let _ = reply(&mut stream, &busy).await;
                continue;
            };
            let (control, shutdown, limits) = (control.clone(), shutdown.clone(), limits.clone());
            conns.spawn(async move {
                serve_connection(stream, control, shutdown, limits).await;
                drop(permit);
            });
        }
        conns.close();
        conns.wait().await;
        drop(self.file);
    }
}

async fn reply(stream: &mut UnixStream, answer: &AdminReply) -> io::Result<()> {
    let mut line = answer.to_json();
    line.push('\n');
    stream.write_all(line.as_bytes()).await
}

async fn serve_connection(
    stream: UnixStream,
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(8 * 1024, read);
    let mut buf = Vec::new();
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(limits.idle_timeout, read_line_bounded(&mut reader, &mut buf, MAX_LINE)) => r,
        };
        let answer = match line {
            Err(_) => {
                tracing::debug!("admin connection idle, closing");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin connection read error");
                return;
            }
            Ok(Ok(Line::Eof)) => return,
            Ok(Ok(Line::TooLong)) => {
                AdminReply::Error(format!("request line longer than {MAX_LINE} bytes"))
            }
            Ok(Ok(Line::Complete)) => match parse_request(&buf) {
                Err(e) => AdminReply::Error(e),
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if control
                        .send(Control::Admin { request, reply: tx })
                        .await
                        .is_err()
                    {
                        AdminReply::Error("daemon is shutting down".into())
                    } else {
                        tokio::select! {
                            _ = shutdown.cancelled() => AdminReply::Error("daemon is shutting down".into()),
                            r = rx => r.unwrap_or_else(|_| AdminReply::Error("daemon is shutting down".into())),
                        }
                    }
                }
            },
        };
        let mut out = answer.to_json();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}
