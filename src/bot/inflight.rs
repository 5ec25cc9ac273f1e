//! Counting turns in flight so shutdown can drain them, and when they last made progress
//! so readiness can tell a busy inbox from a stuck one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Invariant: the count equals the number of live [`TurnGuard`]s; `progress_ms` is the
/// Unix ms when a turn last finished or the first turn after an idle spell started.
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    inner: Arc<(AtomicUsize, Notify)>,
    progress_ms: Arc<AtomicU64>,
}

pub(crate) struct TurnGuard(InFlight);

impl InFlight {
    pub(crate) fn enter(&self) -> TurnGuard {
        if self.inner.0.fetch_add(1, Ordering::SeqCst) == 0 {
            self.progressed();
        }
        TurnGuard(self.clone())
    }

    fn progressed(&self) {
        self.progress_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// The turns in flight as readiness judges them.
    pub(crate) fn readiness(&self) -> crate::ops::readiness::InboxFacts {
        crate::ops::readiness::InboxFacts {
            pending: self.count(),
            last_progress_ms: self.progress_ms.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Waits until no turn is in flight, or `limit` passes. True when drained.
    pub(crate) async fn drained(&self, limit: Duration) -> bool {
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
        self.0.progressed();
        if self.0.inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.1.notify_waiters();
        }
    }
}
