//! The daemon side of the control socket.
//!
//! Invariants: the socket is 0600 inside a 0700 folder; a peer whose uid differs from ours
//! is dropped before reading a byte; each connection must say hello within
//! [`HANDSHAKE_TIMEOUT`] and each later request must arrive within the idle timeout, so a
//! slow or silent client holds nothing but its own task. Frames over the size cap close the
//! connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::ipc::frame::{read_async, write_async};
use crate::ipc::proto::{ErrorKind, Request, Response, PROTOCOL_VERSION};
use crate::ipc::HANDSHAKE_TIMEOUT;
use crate::logging::LastError;
use crate::status::DaemonReport;

use super::workload::Workload;

/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Static facts for the status report.
pub struct DaemonInfo {
    pub name: String,
    pub config_path: Option<String>,
    pub log_path: String,
    pub socket: String,
    pub started_at_ms: u64,
    pub started: Instant,
    pub last_error: LastError,
}

/// Shared by all connections.
pub struct ControlState {
    pub info: DaemonInfo,
    pub workload: Arc<dyn Workload>,
    /// Set to `Some(drain)` to ask the daemon to shut down.
    pub shutdown: watch::Sender<Option<Duration>>,
}

impl ControlState {
    pub fn report(&self) -> DaemonReport {
        let (log_write_errors, log_error) = crate::logging::write_errors();
        let mut r = DaemonReport {
            name: self.info.name.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: self.info.started_at_ms,
            uptime_secs: self.info.started.elapsed().as_secs(),
            config_path: self.info.config_path.clone(),
            log_path: self.info.log_path.clone(),
            socket: self.info.socket.clone(),
            workload: self.workload.kind().to_string(),
            last_error: self.info.last_error.get().or(log_error),
            log_write_errors,
            ..Default::default()
        };
        self.workload.fill_report(&mut r);
        r
    }
}

/// Accepts connections until the listener fails; each connection runs in its own task.
pub async fn serve(listener: UnixListener, state: Arc<ControlState>) {
    let my_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == my_uid => {}
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    "refused control connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read control peer credentials; refused");
                continue;
            }
        }
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(reason) = handle(stream, state).await {
                tracing::debug!(%reason, "control connection closed");
            }
        });
    }
}

async fn handle(mut stream: UnixStream, state: Arc<ControlState>) -> Result<(), String> {
    let first: Request = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_async(&mut stream))
        .await
        .map_err(|_| "no hello within the handshake timeout".to_string())?
        .map_err(|e| e.to_string())?;
    match first {
        Request::Hello { protocol, .. } if protocol == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                protocol: PROTOCOL_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                name: state.info.name.clone(),
                pid: std::process::id(),
            };
            write_async(&mut stream, &hello)
                .await
                .map_err(|e| e.to_string())?;
        }
        Request::Hello { protocol, .. } => {
            let msg =
                format!("protocol {protocol} not supported (daemon speaks {PROTOCOL_VERSION})");
            let _ = write_async(
                &mut stream,
                &Response::Error {
                    kind: ErrorKind::BadRequest,
                    message: msg.clone(),
                },
            )
            .await;
            return Err(msg);
        }
        _ => return Err("first frame was not hello".into()),
    }
    loop {
        let req: Request = match tokio::time::timeout(IDLE_TIMEOUT, read_async(&mut stream)).await {
            Err(_) => return Err("idle".into()),
            Ok(r) => r.map_err(|e| e.to_string())?,
        };
        let resp = answer(req, &state).await;
        write_async(&mut stream, &resp)
            .await
            .map_err(|e| e.to_string())?;
    }
}

async fn answer(req: Request, state: &ControlState) -> Response {
    match req {
        Request::Hello { .. } => Response::Error {
            kind: ErrorKind::BadRequest,
            message: "hello sent twice".into(),
        },
        Request::Status => Response::Status(Box::new(state.report())),
        Request::Health { timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms.clamp(100, 120_000));
            Response::Health(state.workload.health(timeout).await)
        }
        Request::Shutdown { drain_ms } => {
            tracing::info!(drain_ms, "shutdown requested over the control socket");
            let _ = state.shutdown.send(Some(Duration::from_millis(drain_ms)));
            Response::ShuttingDown
        }
        Request::Send { to, text, markdown } => {
            if state.shutdown.borrow().is_some() {
                return Response::Error {
                    kind: ErrorKind::ShuttingDown,
                    message: "the daemon is shutting down".into(),
                };
            }
            match state.workload.send(to, text, markdown).await {
                Ok(outcome) => Response::Sent(outcome),
                Err((kind, message)) => Response::Error { kind, message },
            }
        }
    }
}
