//! Blocking control-socket client used by the CLI (no async runtime: fast start).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::frame::{read_sync, write_sync, FrameError};
use super::proto::{Request, Response, PROTOCOL_VERSION};

/// Why talking to a daemon failed; decides between "not running" and "cannot tell".
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file, or nobody listening (ECONNREFUSED): the daemon is not running.
    #[error("no daemon is listening on {0}")]
    NotListening(String),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}")]
    PermissionDenied(String),
    /// It accepted but did not answer in time, or answered nonsense.
    #[error("the daemon on {path} did not answer properly: {reason}")]
    NoAnswer { path: String, reason: String },
    /// It answered with a response that does not fit the request.
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// An answer that does not fit the request, shown in its debug form.
    pub fn unexpected(answer: &super::Response) -> ClientError {
        ClientError::Unexpected(format!("{answer:?}"))
    }
}

/// A connection that has completed the hello exchange.
pub struct Client {
    stream: UnixStream,
    path: String,
    /// What the daemon said in its hello.
    pub daemon_version: String,
    pub daemon_pid: u32,
}

impl Client {
    /// Connects and says hello. `timeout` bounds each read and write.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let path = socket.display().to_string();
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NotListening(path.clone())
            }
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.clone()),
            _ => ClientError::NoAnswer {
                path: path.clone(),
                reason: e.to_string(),
            },
        })?;
        let no_answer = |reason: String| ClientError::NoAnswer {
            path: path.clone(),
            reason,
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| no_answer(e.to_string()))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| no_answer(e.to_string()))?;
        let mut client = Client {
            stream,
            path: path.clone(),
            daemon_version: String::new(),
            daemon_pid: 0,
        };
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        match client.request(&hello)? {
            Response::Hello {
                protocol,
                daemon_version,
                pid,
                ..
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(no_answer(format!(
                        "daemon speaks protocol {protocol}, this CLI speaks {PROTOCOL_VERSION}: \
                         restart the daemon with this version"
                    )));
                }
                client.daemon_version = daemon_version;
                client.daemon_pid = pid;
                Ok(client)
            }
            Response::Error { message, .. } => Err(no_answer(message)),
            other => Err(no_answer(format!("unexpected hello answer {other:?}"))),
        }
    }

    /// Sets how long the next answers may take (health checks and sends wait longer).
    pub fn set_timeout(&self, timeout: Duration) {
        let _ = self.stream.set_read_timeout(Some(timeout));
    }

    /// Sends one request and waits for its response.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let path = self.path.clone();
        let fail = |e: FrameError| ClientError::NoAnswer {
            path: path.clone(),
            reason: e.to_string(),
        };
        write_sync(&mut self.stream, req).map_err(fail)?;
        read_sync(&mut self.stream).map_err(fail)
    }
}
