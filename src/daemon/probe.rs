//! Deciding whether a daemon is running: a socket round trip first, the pid lock second.
//! `daemon status`, `start`, `stop`, `send` and `healthcheck` all decide through here, so
//! they agree on every state.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::Code;
use crate::ipc::client::{Client, ClientError};
use crate::paths::{DaemonPaths, StateAccess};

use super::pidfile::{is_locked, lock_state, read_record, recorded_socket, LockState};

/// How long a probe waits for hello.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket to connect to: the one the pid file records, else [`DaemonPaths::socket`].
/// A record in a service user's folder ([`StateAccess::ServiceOwned`]) is only followed
/// to this name's own socket paths, so it cannot steer root's client elsewhere.
pub(crate) fn control_socket(paths: &DaemonPaths) -> PathBuf {
    match recorded_socket(&paths.pid_file) {
        Some(socket)
            if socket == paths.socket
                || socket == paths.fallback_socket()
                || matches!(paths.state_access(), Ok(StateAccess::Own)) =>
        {
            socket
        }
        _ => paths.socket.clone(),
    }
}

/// The state of one daemon name.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Answered hello.
    Running { pid: u32, version: String },
    /// Does not answer; why.
    Down(Down),
}

/// Why a daemon does not answer on its control socket.
#[derive(Debug)]
pub(crate) enum Down {
    /// The pid lock is held but the socket does not answer (starting, or wedged).
    Unresponsive { pid: Option<u32>, reason: String },
    /// A pid file is left over but no process holds its lock.
    Stale { pid: Option<u32> },
    /// Nothing there.
    NotRunning,
    /// We may not talk to it (socket owned by someone else).
    Denied { reason: String },
    /// The name's state or run folder is not ours or is writable by others: nothing in
    /// it is trusted (exit 2; the reason names the path and the fix).
    UnsafeFolder { reason: String },
}

/// Probes a daemon. Never blocks longer than about [`PROBE_TIMEOUT`].
pub(crate) fn probe(paths: &DaemonPaths) -> Probe {
    match connect(paths) {
        Ok(c) => Probe::Running {
            pid: c.daemon_pid,
            version: c.daemon_version.clone(),
        },
        Err(down) => Probe::Down(down),
    }
}

/// A connection that said hello, or why there is none. Never blocks longer than about
/// [`PROBE_TIMEOUT`].
pub(crate) fn connect(paths: &DaemonPaths) -> Result<Client, Down> {
    // A service user's folder is read by root too (status); what acts on it (stop,
    // start, leftovers) asks `check_state_dir`, which refuses it. Our own run folder must
    // be ours too (a service user's is that user's).
    let checked = paths.state_access().and_then(|access| match access {
        StateAccess::ServiceOwned { .. } => Ok(()),
        StateAccess::Own | StateAccess::Missing => paths.check_run_dir(),
    });
    match checked {
        Ok(()) => {}
        Err(e) if e.code() == Code::Usage => {
            return Err(Down::UnsafeFolder {
                reason: e.to_string(),
            })
        }
        Err(e) => {
            return Err(Down::Denied {
                reason: e.to_string(),
            })
        }
    }
    let err = match Client::connect(&control_socket(paths), PROBE_TIMEOUT) {
        Ok(c) => return Ok(c),
        Err(ClientError::PermissionDenied(p)) => {
            return Err(Down::Denied {
                reason: format!("permission denied on {p}"),
            })
        }
        Err(err) => err,
    };
    let pid = read_record(&paths.pid_file).map(|r| r.pid);
    Err(match lock_state(&paths.pid_file) {
        LockState::Held => Down::Unresponsive {
            pid,
            reason: err.to_string(),
        },
        LockState::Free => Down::Stale { pid },
        LockState::Missing => Down::NotRunning,
        LockState::Unknown(reason) => Down::Denied {
            reason: format!("{err}; {reason}"),
        },
    })
}

/// Removes a dead daemon's pid file and sockets (at the two places a daemon listens, not
/// wherever a record says). Only call when no process holds the lock (checked again
/// here, so a daemon that just started keeps its files) and the state folder passed
/// [`DaemonPaths::check_state_dir`].
pub(crate) fn remove_leftovers(paths: &DaemonPaths) {
    if !is_locked(&paths.pid_file) {
        let _ = fs::remove_file(&paths.pid_file);
        let _ = fs::remove_file(&paths.socket);
        let _ = fs::remove_file(paths.fallback_socket());
    }
}
