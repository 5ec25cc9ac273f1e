//! The connection cap of an HTTP listener, with room made for newcomers: when every slot
//! is taken, the oldest connection that is only waiting for a request head (new, idle
//! between kept-alive requests, or trickling its head) is told to close and its slot goes
//! to the new connection. So clients that hold connections without asking anything cannot
//! lock out one that does; only connections with a request in progress are never taken.
//!
//! A connection counts as busy while a handler runs (head received, response not yet
//! produced); a response body still streaming after that does not count.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a newcomer waits for an evicted connection to hand back its slot.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// The slots of one listener.
pub(crate) struct Slots {
    max: usize,
    permits: Arc<Semaphore>,
    /// Live connections, oldest first. Dead entries are pruned when the list is scanned
    /// to make room and whenever it reaches twice `max` (at most `max` are alive, so
    /// pruning halves it at least): it never holds more than `2 * max` entries, however
    /// many connections come and go.
    conns: Mutex<VecDeque<Weak<Slot>>>,
}

/// One connection's slot: its in-flight request count and the eviction signal.
pub(crate) struct Slot {
    in_flight: AtomicUsize,
    evicting: AtomicBool,
    evict: Notify,
}

/// A claimed slot: hold it for as long as the connection is served.
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    pub(crate) slot: Arc<Slot>,
    /// Another connection was told to close to free this slot.
    pub(crate) made_room: bool,
}

/// Marks a request in progress on a [`Slot`] until dropped.
pub(crate) struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slot {
    /// Marks a request in progress until the returned guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Completes when this connection is chosen to make room.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Slots {
    /// `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Slots {
        let max = max.max(1);
        Slots {
            max,
            permits: Arc::new(Semaphore::new(max)),
            conns: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection: a free one, or the slot of the oldest connection
    /// waiting for a request head (which is told to close). `None` when every slot is held
    /// by a connection with a request in progress.
    pub(crate) async fn claim(&self) -> Option<Held> {
        let (permit, made_room) = match self.permits.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => {
                if !self.evict_oldest_idle() {
                    return None;
                }
                let freed = self.permits.clone().acquire_owned();
                let p = tokio::time::timeout(EVICTION_GRACE, freed)
                    .await
                    .ok()?
                    .ok()?;
                (p, true)
            }
        };
        let slot = Arc::new(Slot {
            in_flight: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let mut conns = self.lock();
        if conns.len() >= 2 * self.max {
            conns.retain(|w| w.strong_count() > 0);
        }
        conns.push_back(Arc::downgrade(&slot));
        drop(conns);
        Some(Held {
            _permit: permit,
            slot,
            made_room,
        })
    }

    /// Waits (at most `limit`) until every slot is handed back.
    pub(crate) async fn drained(&self, limit: Duration) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.permits.acquire_many(all)).await;
    }

    fn evict_oldest_idle(&self) -> bool {
        let mut conns = self.lock();
        conns.retain(|w| w.strong_count() > 0);
        let idle = conns.iter().filter_map(Weak::upgrade).find(|s| {
            s.in_flight.load(Ordering::SeqCst) == 0 && !s.evicting.swap(true, Ordering::SeqCst)
        });
        match idle {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Slot>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_that_came_and_went_are_not_kept() {
        let slots = Slots::new(4);
        let _kept = slots.claim().await.expect("free slot");
        for _ in 0..1000 {
            drop(slots.claim().await.expect("free slot"));
        }
        let tracked = slots.lock().len();
        assert!(tracked <= 8, "{tracked} entries kept for 1 live connection");
        assert_eq!(
            slots.lock().iter().filter(|w| w.strong_count() > 0).count(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let slots = Slots::new(2);
        let a = slots.claim().await.expect("free slot");
        let b = slots.claim().await.expect("free slot");
        let _busy_b = b.slot.busy();
        // Full: `a` (idle, oldest) is told to close; its slot goes to `c` once handed back.
        let evicted_a = {
            let a_slot = a.slot.clone();
            tokio::spawn(async move {
                a_slot.evicted().await;
                drop(a);
            })
        };
        let c = slots.claim().await.expect("a's slot");
        evicted_a.await.unwrap();
        let _busy_c = c.slot.busy();
        // Now both are busy: nobody is evicted and the newcomer gets nothing.
        assert!(slots.claim().await.is_none());
        drop(_busy_b);
        drop(b);
        assert!(slots.claim().await.is_some(), "a freed slot is reused");
    }
}
