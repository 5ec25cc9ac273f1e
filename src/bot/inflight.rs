//! Counting turns in flight so shutdown can drain them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Invariant: the count equals the number of live [`TurnGuard`]s.
#[derive(Clone, Default)]
pub struct InFlight {
    inner: Arc<(AtomicUsize, Notify)>,
}

pub struct TurnGuard(InFlight);

impl InFlight {
    pub fn enter(&self) -> TurnGuard {
        self.inner.0.fetch_add(1, Ordering::SeqCst);
        TurnGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Waits until no turn is in flight, or `limit` passes. True when drained.
    pub async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.1.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if self.0.inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.1.notify_waiters();
        }
    }
}
