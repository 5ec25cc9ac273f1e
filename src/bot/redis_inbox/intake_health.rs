//! Whether the shared inbox's intake works, for status and readiness. A Redis that answers
//! the heartbeat can still refuse every intake (a full Redis: `maxmemory` with
//! `noeviction` refuses writes with `OOM`), and then no message is accepted (none ACKed):
//! that must show, named by the error's kind.
//!
//! Invariant: an intake failure is shown until an intake succeeds again, or for at most
//! [`FAILURE_SHOWN_FOR`] after the last failure (a bot that gets no message meanwhile is
//! not kept "not ready" forever: with the HTTP callback a not-ready replica may get no
//! traffic to prove itself with).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::redis::RedisError;

/// How long the last intake failure is shown without a success after it.
pub(crate) const FAILURE_SHOWN_FOR: Duration = Duration::from_secs(60);

/// The last intake failure not followed by a success.
#[derive(Default)]
pub(crate) struct IntakeHealth {
    last_failure: Mutex<Option<(Instant, String)>>,
}

impl IntakeHealth {
    /// Records an intake Redis refused or did not answer.
    pub(crate) fn failed(&self, error: &RedisError) {
        *self.lock() = Some((Instant::now(), failure_kind(error)));
    }

    /// Records an intake Redis took.
    pub(crate) fn succeeded(&self) {
        *self.lock() = None;
    }

    /// The kind of the intake failure still shown (`OOM`, `timeout`, ...), if any.
    pub(crate) fn failing(&self) -> Option<String> {
        self.lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILURE_SHOWN_FOR)
            .map(|(_, kind)| kind.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A short, secret-free name of what went wrong: the server's error code (`OOM`,
/// `READONLY`, `NOAUTH`, ...) when Redis refused, else `timeout` or `connection`.
fn failure_kind(error: &RedisError) -> String {
    match error {
        RedisError::Command { source, .. } => match source.code() {
            Some(code) => code.to_string(),
            None if source.is_timeout() => "timeout".to_string(),
            None => "connection".to_string(),
        },
        RedisError::TimedOut => "timeout".to_string(),
        RedisError::BadUrl => "bad url".to_string(),
        RedisError::ReplicaIdInUse { .. } => "replica id in use".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_shows_until_a_success_or_for_a_bounded_time() {
        let health = IntakeHealth::default();
        assert_eq!(health.failing(), None);
        health.failed(&RedisError::TimedOut);
        assert_eq!(health.failing().as_deref(), Some("timeout"));
        health.succeeded();
        assert_eq!(health.failing(), None, "a success clears it");
        health.failed(&RedisError::TimedOut);
        tokio::time::advance(FAILURE_SHOWN_FOR - Duration::from_millis(1)).await;
        assert_eq!(health.failing().as_deref(), Some("timeout"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(health.failing(), None, "shown for a bounded time only");
    }
}
