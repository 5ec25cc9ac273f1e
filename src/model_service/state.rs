//! Figures shared by the supervisor, the health poller and the control socket.
//!
//! Invariant: the lock is only held to copy or update plain fields, never across an
//! `.await`, so a status request never waits on the child.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A model service whose child ended by itself [`FAILING_EXITS`] times within
/// [`FAILING_WINDOW`] is `failing`; it recovers once the child stays up that long.
pub(crate) const FAILING_EXITS: usize = 3;
pub(crate) const FAILING_WINDOW: Duration = Duration::from_secs(60);

/// One consistent copy of the model service's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The running child's pid; `None` between a crash and its restart, and after stop.
    pub(crate) child_pid: Option<u32>,
    /// Replacement children started (or attempted) since the daemon started.
    pub(crate) restarts: u64,
    /// How the previous child ended (`exit code 1`, `killed by SIGKILL`, ...).
    pub(crate) last_exit: Option<String>,
    /// Result of the latest health URL poll; `None` before the first poll or without URL.
    pub(crate) healthy: Option<bool>,
    /// Unix ms of the previous child's end.
    pub(crate) last_exit_at_ms: Option<u64>,
    /// Exits by itself (or failed spawns) within the last [`FAILING_WINDOW`].
    pub(crate) recent_exits: usize,
}

impl Snapshot {
    /// True when the child keeps ending: [`FAILING_EXITS`] or more within [`FAILING_WINDOW`].
    pub(crate) fn failing(&self) -> bool {
        self.recent_exits >= FAILING_EXITS
    }

    /// `failing`, `running` or `restarting` (no child between a crash and its restart).
    pub(crate) fn state(&self) -> &'static str {
        match (self.failing(), self.child_pid) {
            (true, _) => "failing",
            (false, Some(_)) => "running",
            (false, None) => "restarting",
        }
    }
}

/// Invariant: `exits` holds only instants within [`FAILING_WINDOW`] of the last look, at
/// most [`FAILING_EXITS`] of them (older ones cannot change the verdict).
#[derive(Debug, Default)]
struct Inner {
    snapshot: Snapshot,
    exits: VecDeque<Instant>,
}

impl Inner {
    fn forget_old_exits(&mut self, now: Instant) {
        while self
            .exits
            .front()
            .is_some_and(|&t| now.duration_since(t) >= FAILING_WINDOW)
        {
            self.exits.pop_front();
        }
        self.snapshot.recent_exits = self.exits.len();
    }
}

#[derive(Debug, Default)]
pub(crate) struct ModelServiceState(Mutex<Inner>);

impl ModelServiceState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The fields stay consistent even if a holder panicked: each update is one store.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut inner = self.lock();
        inner.forget_old_exits(Instant::now());
        inner.snapshot.clone()
    }

    pub(crate) fn child_started(&self, pid: u32) {
        self.lock().snapshot.child_pid = Some(pid);
    }

    /// The child is gone (or could not be started): `how` says why. `by_itself` is false
    /// for a stop the daemon asked for, which never counts towards `failing`.
    pub(crate) fn child_ended(&self, how: String, by_itself: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.snapshot.child_pid = None;
        inner.snapshot.last_exit = Some(how);
        inner.snapshot.last_exit_at_ms = Some(crate::clock::now_ms());
        if by_itself {
            inner.exits.push_back(now);
            while inner.exits.len() > FAILING_EXITS {
                inner.exits.pop_front();
            }
        }
        inner.forget_old_exits(now);
    }

    pub(crate) fn restart_attempted(&self) {
        self.lock().snapshot.restarts += 1;
    }

    /// Stores a poll result; returns the previous one (to log only transitions).
    pub(crate) fn set_healthy(&self, healthy: bool) -> Option<bool> {
        self.lock().snapshot.healthy.replace(healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn three_exits_within_the_window_are_failing_until_the_child_stays_up() {
        let state = ModelServiceState::default();
        state.child_started(10);
        state.child_ended("stopped by the daemon".into(), false);
        assert_eq!(
            state.snapshot().recent_exits,
            0,
            "a requested stop is no failure"
        );
        for pid in 11..13 {
            state.child_started(pid);
            state.child_ended("exit code 1".into(), true);
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        state.child_started(13);
        assert_eq!(
            state.snapshot().state(),
            "running",
            "two exits are not failing"
        );
        state.child_ended("exit code 1".into(), true);
        state.child_started(14);
        let s = state.snapshot();
        assert!(s.failing() && s.state() == "failing", "{s:?}");
        assert!(s.last_exit_at_ms.is_some());
        // The child stays up: once the window has passed since the first of the three
        // exits, fewer than three remain in it.
        tokio::time::advance(FAILING_WINDOW - Duration::from_secs(10)).await;
        assert_eq!(state.snapshot().state(), "running");
    }
}
