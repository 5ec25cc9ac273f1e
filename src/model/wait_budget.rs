//! One bound on all the waiting a turn does: `limits.queue.max_wait_ms` covers the wait
//! behind its conversation's earlier turns and every wait for a model slot (primary and
//! fallback) together, so a turn never waits the bound twice.
//!
//! Invariant: the waits run through one [`WaitBudget`] end no later than its total after
//! the first began, whatever their number (time not spent waiting is not counted).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What is left of a turn's queue-wait bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitBudget {
    left: Duration,
}

impl WaitBudget {
    /// `total` to spend, less what was `already_waited`.
    pub(crate) fn new(total: Duration, already_waited: Duration) -> WaitBudget {
        WaitBudget {
            left: total.saturating_sub(already_waited),
        }
    }

    /// Runs `wait` for at most what is left and deducts the time it took. `None` when the
    /// budget ran out first (`wait` is then dropped, which must give up cleanly).
    pub(crate) async fn spend<F: Future>(&mut self, wait: F) -> Option<F::Output> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.left, wait).await.ok();
        self.left = self.left.saturating_sub(started.elapsed());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn waits_share_one_bound() {
        let mut budget = WaitBudget::new(1000 * MS, 100 * MS);
        let started = Instant::now();
        let first = budget.spend(tokio::time::sleep(600 * MS)).await;
        assert_eq!(first, Some(()));
        // 300 ms are left: a second wait of 600 ms is cut there, not at a fresh 1000 ms.
        let second = budget.spend(tokio::time::sleep(600 * MS)).await;
        assert_eq!(second, None);
        assert_eq!(started.elapsed(), 900 * MS);
        assert_eq!(
            budget.spend(std::future::ready(7)).await,
            Some(7),
            "ready at once"
        );
        assert_eq!(budget.spend(tokio::time::sleep(MS)).await, None, "spent");
    }

    #[tokio::test(start_paused = true)]
    async fn time_between_waits_is_not_counted() {
        let mut budget = WaitBudget::new(500 * MS, Duration::ZERO);
        assert!(budget.spend(tokio::time::sleep(200 * MS)).await.is_some());
        tokio::time::sleep(10_000 * MS).await; // the model call, say
        let resumed = Instant::now();
        assert_eq!(budget.spend(std::future::pending::<()>()).await, None);
        assert_eq!(resumed.elapsed(), 300 * MS);
    }
}
