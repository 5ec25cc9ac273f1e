//! Figures shared by the supervisor, the health poller and the control socket.
//!
//! Invariant: the lock is only held to copy or update plain fields, never across an
//! `.await`, so a status request never waits on the child.

use std::sync::{Mutex, MutexGuard};

/// One consistent copy of the gateway's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The running child's pid; `None` between a crash and its restart, and after stop.
    pub child_pid: Option<u32>,
    /// Replacement children started (or attempted) since the daemon started.
    pub restarts: u64,
    /// How the previous child ended (`exit code 1`, `killed by SIGKILL`, ...).
    pub last_exit: Option<String>,
    /// Result of the latest health URL poll; `None` before the first poll or without URL.
    pub healthy: Option<bool>,
}

#[derive(Debug, Default)]
pub struct GatewayState(Mutex<Snapshot>);

impl GatewayState {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // The fields stay consistent even if a holder panicked: each update is one store.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    pub fn child_started(&self, pid: u32) {
        self.lock().child_pid = Some(pid);
    }

    /// The child is gone (or could not be started): `how` says why.
    pub fn child_ended(&self, how: String) {
        let mut s = self.lock();
        s.child_pid = None;
        s.last_exit = Some(how);
    }

    pub fn restart_attempted(&self) {
        self.lock().restarts += 1;
    }

    /// Stores a poll result; returns the previous one (to log only transitions).
    pub fn set_healthy(&self, healthy: bool) -> Option<bool> {
        self.lock().healthy.replace(healthy)
    }
}
