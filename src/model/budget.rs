//! The time budget of one turn, split into phases.
//!
//! Invariant: every phase deadline is capped by the turn's total deadline
//! (`arrived + timeout_ms`), so no wait anywhere can outlive the turn. SSE comments
//! (keepalive pings) never move any deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ModelConfig;

/// Per-phase budgets of one model, resolved from its config with the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseBudgets {
    pub total: Duration,
    /// Default `min(2000, total / 4)` ms.
    pub connect: Duration,
    /// From request sent to the first content token; `None` means "the time left". When
    /// the model has a `fallback` and no explicit value, half the total: a server that
    /// never sends a byte must leave the fallback enough time to answer.
    pub first_token: Option<Duration>,
    /// Longest silence between two streamed data events; default `min(5000, total / 2)` ms.
    pub idle: Duration,
}

impl PhaseBudgets {
    pub fn from_config(cfg: &ModelConfig) -> Self {
        let total = cfg.timeout_ms.max(1);
        PhaseBudgets {
            total: Duration::from_millis(total),
            connect: Duration::from_millis(
                cfg.connect_timeout_ms
                    .unwrap_or((total / 4).min(2_000))
                    .max(1),
            ),
            first_token: cfg
                .first_token_timeout_ms
                .or_else(|| cfg.fallback.as_ref().map(|_| total / 2))
                .map(Duration::from_millis),
            idle: Duration::from_millis(
                cfg.idle_timeout_ms.unwrap_or((total / 2).min(5_000)).max(1),
            ),
        }
    }
}

/// Deadlines for one model call inside a turn.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlines {
    /// The turn's end: nothing may wait past it.
    pub total: Instant,
    pub first_token: Instant,
    pub idle: Duration,
}

impl CallDeadlines {
    /// Deadlines for a call starting now, inside a turn ending at `total`.
    pub fn start(budgets: &PhaseBudgets, total: Instant) -> Self {
        let now = Instant::now();
        let first_token = budgets
            .first_token
            .map_or(total, |ft| (now + ft).min(total));
        CallDeadlines {
            total,
            first_token,
            idle: budgets.idle,
        }
    }

    /// When the next data event must arrive: before the first content token the
    /// first-token deadline applies, after it the idle gap from the last data event.
    /// Both are capped by the total deadline. Returns the deadline and which phase it is.
    pub fn next(&self, last_data: Option<Instant>) -> (Instant, super::error::TimeoutPhase) {
        use super::error::TimeoutPhase;
        let (at, phase) = match last_data {
            None => (self.first_token, TimeoutPhase::FirstToken),
            Some(t) => (t + self.idle, TimeoutPhase::Idle),
        };
        if at >= self.total {
            (self.total, TimeoutPhase::Total)
        } else {
            (at, phase)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::TimeoutPhase;

    #[tokio::test]
    async fn phases_are_capped_by_total() {
        let b = PhaseBudgets {
            total: Duration::from_millis(1000),
            connect: Duration::from_millis(100),
            first_token: Some(Duration::from_millis(300)),
            idle: Duration::from_millis(200),
        };
        let end = Instant::now() + Duration::from_millis(250);
        let d = CallDeadlines::start(&b, end);
        assert_eq!(d.next(None), (end, TimeoutPhase::Total));
        let end = Instant::now() + Duration::from_secs(10);
        let d = CallDeadlines::start(&b, end);
        assert_eq!(d.next(None).1, TimeoutPhase::FirstToken);
        let t = Instant::now();
        assert_eq!(
            d.next(Some(t)),
            (t + Duration::from_millis(200), TimeoutPhase::Idle)
        );
    }
}
