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
//! conversation with a live listener, plus dead ones pruned once they outnumber the live
//! ones (bounded by twice the listeners plus [`PRUNE_FLOOR`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// Below this many entries the map is never pruned (pruning scans it all).
const PRUNE_FLOOR: usize = 64;

#[derive(Default)]
pub(crate) struct TurnEnded {
    /// Fires on every end (for waits on any room, not on one conversation).
    any: Notify,
    by_conversation: Mutex<HashMap<String, Weak<Notify>>>,
}

impl TurnEnded {
    /// The signal of `conversation`'s turn ends; keep it while waiting.
    pub(crate) fn listen(&self, conversation: &str) -> Arc<Notify> {
        let mut map = self.map();
        if let Some(live) = map.get(conversation).and_then(Weak::upgrade) {
            return live;
        }
        if map.len() >= PRUNE_FLOOR {
            map.retain(|_, signal| signal.strong_count() > 0);
        }
        let signal = Arc::new(Notify::new());
        map.insert(conversation.to_string(), Arc::downgrade(&signal));
        signal
    }

    /// A turn of `conversation` ended here: wakes its waiters and the waits on any end.
    pub(crate) fn ended(&self, conversation: &str) {
        let signal = {
            let mut map = self.map();
            let signal = map.get(conversation).and_then(Weak::upgrade);
            if signal.is_none() {
                map.remove(conversation);
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

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Notify>>> {
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
            ended.map().len() <= PRUNE_FLOOR + 1,
            "{}",
            ended.map().len()
        );
    }
}
