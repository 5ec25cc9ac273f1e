//! The daemon side of the control socket.
//!
//! Invariants: the socket is 0600 inside a 0700 folder; a peer whose uid is neither ours
//! nor root's is dropped before reading a byte (root may read and signal our process
//! anyway, so refusing it protects nothing; it lets `sudo clawdbot daemon status` see a
//! system service running as `User=clawdbot`); each connection must say hello within
//! [`HANDSHAKE_TIMEOUT`] and each later request must arrive within the idle timeout, so a
//! slow or silent client holds nothing but its own task. Frames over the size cap close the
//! connection. At most [`MAX_CONTROL_CONNECTIONS`] are served at once; at the cap a new
//! client takes the slot of the oldest connection with no request in progress (see
//! [`slots`](crate::listen::slots)), so silent clients cannot lock `status` out; a spare
//! descriptor is held so that when the process runs out of
//! descriptors the next control client can still be accepted and answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::ipc::frame::{read_async, write_async};
use crate::ipc::proto::{ErrorKind, Request, Response, PROTOCOL_VERSION};
use crate::ipc::HANDSHAKE_TIMEOUT;
use crate::listen::slots::{Slot, Slots};
use crate::logging::LastError;
use crate::status::DaemonReport;

use super::workload::Workload;

/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Control connections served at once (all from our own uid; the CLI uses one at a time).
pub(crate) const MAX_CONTROL_CONNECTIONS: usize = 64;

/// One descriptor kept open (on `/dev/null`) for when `accept` fails with EMFILE/ENFILE:
/// closing it frees a slot, so the waiting control client is accepted and answered instead
/// of the accept loop spinning on a full descriptor table. Re-opened when a slot is free.
struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    fn open() -> SpareDescriptor {
        SpareDescriptor(std::fs::File::open("/dev/null").ok())
    }

    /// Closes the spare; false when it was not held (nothing to free).
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes the spare back when it was released and a descriptor is free again.
    fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Static facts for the status report.
pub(crate) struct DaemonInfo {
    pub(crate) name: String,
    pub(crate) config_path: Option<String>,
    pub(crate) log_path: String,
    /// The control socket served now (it changes when the daemon re-binds it, see
    /// [`ControlState::set_socket`]).
    pub(crate) socket: std::sync::RwLock<String>,
    pub(crate) started_at_ms: u64,
    pub(crate) started: Instant,
    pub(crate) last_error: LastError,
}

/// Shared by all connections.
pub(crate) struct ControlState {
    pub(crate) info: DaemonInfo,
    pub(crate) workload: Arc<dyn Workload>,
    /// Set to `Some(drain)` to ask the daemon to shut down.
    pub(crate) shutdown: watch::Sender<Option<Duration>>,
}

/// The ops endpoint's view of the running daemon.
impl crate::ops::DaemonView for ControlState {
    fn report(&self) -> DaemonReport {
        ControlState::report(self)
    }

    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        self.workload.readiness()
    }

    fn draining(&self) -> bool {
        self.shutdown.borrow().is_some()
    }
}

impl ControlState {
    /// Records that the control socket is now served at `path` (after a re-bind).
    pub(crate) fn set_socket(&self, path: &std::path::Path) {
        let mut socket = self.info.socket.write().unwrap_or_else(|p| p.into_inner());
        *socket = path.display().to_string();
    }

    pub(crate) fn report(&self) -> DaemonReport {
        let (log_write_errors, log_error) = crate::logging::write_errors();
        let mut r = DaemonReport {
            name: self.info.name.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: self.info.started_at_ms,
            uptime_secs: self.info.started.elapsed().as_secs(),
            config_path: self.info.config_path.clone(),
            log_path: self.info.log_path.clone(),
            socket: self
                .info
                .socket
                .read()
                .map(|s| s.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
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
pub(crate) async fn serve(listener: UnixListener, state: Arc<ControlState>) {
    let my_uid = nix::unistd::geteuid().as_raw();
    let slots = Slots::new(MAX_CONTROL_CONNECTIONS);
    let mut spare = SpareDescriptor::open();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if out_of_descriptors(&e) && spare.release() => {
                tracing::warn!(error = %e, "out of file descriptors; used the spare one to accept a control client");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                spare.restore();
                continue;
            }
        };
        spare.restore();
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == my_uid || cred.uid() == 0 => {}
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
        let Some(held) = slots.claim().await else {
            tracing::warn!(
                max = MAX_CONTROL_CONNECTIONS,
                "every control connection is busy; closed a new one"
            );
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            // An async block captures only the fields it uses; moving the whole claim in
            // keeps its permit (the slot) held for as long as this task runs.
            let held = held;
            let slot = held.slot.clone();
            tokio::select! {
                ended = handle(stream, state, slot) => {
                    if let Err(reason) = ended {
                        tracing::debug!(%reason, "control connection closed");
                    }
                }
                _ = held.slot.evicted() => {
                    tracing::debug!("idle control connection closed to make room");
                }
            }
            drop(held);
        });
    }
}

/// Why the daemon closed a control connection (logged at debug level).
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("no hello within the handshake timeout")]
    NoHello,
    #[error("protocol {0} not supported (daemon speaks {PROTOCOL_VERSION})")]
    Protocol(u32),
    #[error("first frame was not hello")]
    NotHello,
    #[error("idle")]
    Idle,
    #[error(transparent)]
    Frame(#[from] crate::ipc::frame::FrameError),
}

async fn handle(
    mut stream: UnixStream,
    state: Arc<ControlState>,
    slot: Arc<Slot>,
) -> Result<(), ConnectionEnd> {
    let first: Request = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_async(&mut stream))
        .await
        .map_err(|_| ConnectionEnd::NoHello)??;
    match first {
        Request::Hello { protocol, .. } if protocol == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                protocol: PROTOCOL_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                name: state.info.name.clone(),
                pid: std::process::id(),
            };
            write_async(&mut stream, &hello).await?;
        }
        Request::Hello { protocol, .. } => {
            let refused = ConnectionEnd::Protocol(protocol);
            let _ = write_async(
                &mut stream,
                &Response::Error {
                    kind: ErrorKind::BadRequest,
                    message: refused.to_string(),
                },
            )
            .await;
            return Err(refused);
        }
        _ => return Err(ConnectionEnd::NotHello),
    }
    loop {
        let req: Request = match tokio::time::timeout(IDLE_TIMEOUT, read_async(&mut stream)).await {
            Err(_) => return Err(ConnectionEnd::Idle),
            Ok(r) => r?,
        };
        let _busy = slot.busy();
        let resp = answer(req, &state).await;
        write_async(&mut stream, &resp).await?;
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
        Request::Conversations { limit } => match state.workload.conversations(limit as usize) {
            Ok(seen) => Response::Conversations { seen },
            Err(super::workload::WorkError { kind, message }) => Response::Error { kind, message },
        },
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
                Err(super::workload::WorkError { kind, message }) => {
                    Response::Error { kind, message }
                }
            }
        }
    }
}
