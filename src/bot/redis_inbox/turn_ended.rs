//! The local signal that a turn ended, per conversation.
//!
//! A waiting turn can become due only when an earlier turn of its own conversation
//! ends, so a turn's end wakes only the waiters of that conversation. (One signal for
//! every conversation woke every waiting turn of the replica on each end, and each asked
//! Redis for its place: with a deep flood about a hundred reads per turn, right when the
//! next turns start.) Turns ended by other replicas are seen by the waiters' own polls.
//!
//! Invariants: a listener gets every end of its conversation signalled after it called
//! [`TurnEnded::listen`] (as with [`Notify::notify_waiters`]); the map holds an entry per
//! conversation with a live listener, plus dead ones pruned once the map has doubled since
//! the last pruning (so it stays below twice the listeners plus [`PRUNE_FLOOR`], and a
//! pruning's scan is paid for by the insertions before it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// Below this many entries the map is never pruned (pruning scans it all).
const PRUNE_FLOOR: usize = 64;

#[derive(Default)]
pub(crate) struct TurnEnded {
    /// Fires on every end (for waits on any room, not on one conversation).
    any: Notify,
    by_conversation: Mutex<Listeners>,
}

/// The signals by conversation, and the size at which dead ones are pruned next.
#[derive(Default)]
struct Listeners {
    map: HashMap<String, Weak<Notify>>,
    prune_at: usize,
}

impl TurnEnded {
    /// The signal of `conversation`'s turn ends; keep it while waiting.
    pub(crate) fn listen(&self, conversation: &str) -> Arc<Notify> {
        let mut listeners = self.listeners();
        if let Some(live) = listeners.map.get(conversation).and_then(Weak::upgrade) {
            return live;
        }
        if listeners.map.len() >= listeners.prune_at.max(PRUNE_FLOOR) {
            listeners.map.retain(|_, signal| signal.strong_count() > 0);
            listeners.prune_at = 2 * listeners.map.len();
        }
        let signal = Arc::new(Notify::new());
        listeners
            .map
            .insert(conversation.to_string(), Arc::downgrade(&signal));
        signal
    }

    /// A turn of `conversation` ended here: wakes its waiters and the waits on any end.
    pub(crate) fn ended(&self, conversation: &str) {
        let signal = {
            let mut listeners = self.listeners();
            let signal = listeners.map.get(conversation).and_then(Weak::upgrade);
            if signal.is_none() {
                listeners.map.remove(conversation);
            }
            signal
        };
        if let Some(signal) = signal {
            signal.notify_waiters();
        }
        self.any.notify_waiters();
    }

    /// Fires on the next end of any conversation.
    pub(crate) fn any(&self) -> tokio::sync::futures::Notified<'_> {
        self.any.notified()
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.by_conversation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn an_end_wakes_its_own_conversation_only_and_the_map_stays_bounded() {
        let ended = TurnEnded::default();
        let a = ended.listen("a");
        let b = ended.listen("b");
        let (wait_a, wait_b, wait_any) = (a.notified(), b.notified(), ended.any());
        ended.ended("b");
        assert!(wait_b.now_or_never().is_some(), "b's waiter is woken");
        assert!(
            wait_any.now_or_never().is_some(),
            "a wait for any end is woken"
        );
        let mut wait_a = Box::pin(wait_a);
        assert!(
            wait_a.as_mut().now_or_never().is_none(),
            "a's waiter sleeps on"
        );
        ended.ended("a");
        assert!(
            wait_a.now_or_never().is_some(),
            "a's waiter is woken by a's end"
        );
        // Conversations that came and went leave no growing map behind.
        drop((a, b));
        for i in 0..10 * PRUNE_FLOOR {
            drop(ended.listen(&format!("c{i}")));
        }
        assert!(
            ended.listeners().map.len() <= PRUNE_FLOOR + 1,
            "{}",
            ended.listeners().map.len()
        );
    }
}
