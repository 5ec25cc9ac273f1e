//! A cap on each conversation's line in this process: at most `limits.queue.max_waiting`
//! turns of one conversation wait behind the one it is answering; one more is told busy
//! at once instead of waiting.
//!
//! Without it a conversation's line was bounded only in time: every message arriving
//! within `limits.queue.max_wait_ms` waited, so a flood of 1 000 msg/s into one group
//! held 8 000 waiting turns (36 MiB at its peak), and those the line could not serve in
//! that time got the busy reply anyway, only 8 s later. The model's queue has had this
//! bound from the start (`limits.queue.max_waiting` per model); this is the same bound
//! for the wait in front of it.
//!
//! Invariants (under one mutex):
//! - a conversation's count is the number of its [`Place`]s alive; a turn holds its place
//!   from before it waits in line to its end, or until its wait ran out (its busy reply
//!   is then sent without it), so the count is the turn being answered (or about to be)
//!   plus those waiting behind it;
//! - places are taken where the tickets are, by the dispatcher in arrival order, never in
//!   the turns' own tasks: tokio runs a task spawned last before the ones spawned just
//!   before it (its LIFO slot), so a turn's task taking its place itself let a later
//!   message take the last place and its earlier one be told busy;
//! - a place is refused when `max_waiting + 1` of the conversation's places are alive
//!   (so `max_waiting: 0` still answers one turn at a time), never otherwise;
//! - a conversation's entry is removed when its count drops to 0.
//!
//! With `state.backend: redis` the count is this replica's turns of the conversation,
//! as the model queue's bound is per replica. Like the model queue's, the bound is the
//! one the daemon started with: `limits` changed by a reload apply at the next start
//! (the reload says so).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::key_counts::KeyCounts;

/// The per-conversation counts of places.
pub(crate) struct LineCap {
    max_waiting: usize,
    places: Mutex<KeyCounts>,
}

/// A turn's place in its conversation's line; dropping it frees the place.
pub(crate) struct Place {
    cap: Arc<LineCap>,
    conversation: String,
}

impl LineCap {
    /// Lines of at most `max_waiting` turns waiting behind the one being answered.
    pub(crate) fn new(max_waiting: usize) -> Arc<LineCap> {
        Arc::new(LineCap {
            max_waiting,
            places: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, KeyCounts> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place in `conversation`'s line, or `None` when `max_waiting` turns already wait
    /// behind the one being answered.
    pub(crate) fn enter(self: &Arc<Self>, conversation: &str) -> Option<Place> {
        let mut places = self.lock();
        if places.get(conversation) > self.max_waiting {
            return None;
        }
        places.add(conversation);
        Some(Place {
            cap: self.clone(),
            conversation: conversation.to_string(),
        })
    }

    /// Conversations with a place taken.
    #[cfg(test)]
    fn conversations(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.cap.lock().remove_one(&self.conversation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answered_and_max_waiting_behind_it_then_busy() {
        let cap = LineCap::new(2);
        let first = cap.enter("c").expect("the first turn");
        let waiting: Vec<_> = (0..2).map(|_| cap.enter("c").expect("waits")).collect();
        assert!(cap.enter("c").is_none(), "a third waiting turn was let in");
        assert!(
            cap.enter("d").is_some(),
            "another conversation is not capped"
        );
        drop(first);
        let next = cap.enter("c").expect("a place freed by a finished turn");
        assert!(cap.enter("c").is_none());
        drop(waiting);
        drop(next);
        assert_eq!(cap.conversations(), 0, "an empty line's entry stays");
    }

    #[test]
    fn no_waiting_still_answers_one_turn_at_a_time() {
        let cap = LineCap::new(0);
        let only = cap.enter("c").expect("a turn with nothing ahead of it");
        assert!(cap.enter("c").is_none());
        drop(only);
        assert!(cap.enter("c").is_some());
    }
}
