//! Arrival order within a conversation.
//!
//! Every message is handed a [`Ticket`] for its conversation by the (single) dispatcher, in
//! the order DingTalk delivered the messages; each turn then runs on its own task. A turn
//! starts only when its ticket is served, so `/reset`, memory and replies of one
//! conversation follow arrival order even though turns run concurrently across
//! conversations.
//!
//! Invariants (all under one mutex):
//! - tickets of a conversation are numbered 0, 1, 2, ... in the order [`TurnOrder::ticket`]
//!   was called, and at most one of them is served at a time;
//! - a ticket dropped, or taken out of the line ([`Ticket::leave_line`]: its turn was told
//!   busy and its busy reply is on the way), before it was served is skipped when the
//!   line reaches it, so it never blocks the tickets behind it; served, the line moves on;
//! - a ticket leaves its line once: dropping a ticket that left changes nothing, even in
//!   a line since emptied and started again at 0;
//! - a conversation's entry is removed once every ticket handed out has left the line.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::redis_inbox::SharedTicket;

/// The per-conversation lines. Share it with `Arc`.
#[derive(Default)]
pub(crate) struct TurnOrder {
    lines: Mutex<HashMap<String, Line>>,
}

struct Line {
    /// The number the next ticket gets.
    next: u64,
    /// The ticket being served; tickets below it are done or were given up.
    serving: watch::Sender<u64>,
    /// Tickets given up before their turn came, skipped when reached.
    abandoned: BTreeSet<u64>,
}

impl Line {
    /// Moves past `done` and every given-up ticket right behind it.
    fn advance_past(&mut self, done: u64) {
        let mut next = done + 1;
        while self.abandoned.remove(&next) {
            next += 1;
        }
        self.serving.send_replace(next);
    }
}

/// A turn's place in its conversation's line: in this process, or across the replicas
/// sharing a Redis inbox (see `bot::redis_inbox`). Dropping it ends the turn's place.
pub(crate) enum Ticket {
    Local(LocalTicket),
    Shared(SharedTicket),
}

impl Ticket {
    /// True when another replica already ended this turn's message (shared line only).
    pub(crate) fn finished_elsewhere(&self) -> bool {
        match self {
            Ticket::Local(_) => false,
            Ticket::Shared(t) => t.finished_elsewhere(),
        }
    }

    /// Waits until every earlier turn of the conversation has finished, at most `limit`.
    /// False when the wait ran out (the ticket then only has to be dropped).
    pub(crate) async fn wait_turn(&mut self, limit: Duration) -> bool {
        match self {
            Ticket::Local(t) => t.wait_turn(limit).await,
            Ticket::Shared(t) => t.wait_turn(limit).await,
        }
    }

    /// Lets the turns behind this one go on while it is still held (for a busy reply on
    /// its way): the line skips it from now on, as if it had been dropped; the message
    /// itself still ends when the ticket is dropped (see [`SharedTicket::leave_line`]).
    pub(crate) async fn leave_line(&mut self) {
        match self {
            Ticket::Local(t) => t.leave_line(),
            Ticket::Shared(t) => t.leave_line().await,
        }
    }
}

/// A place in a conversation's line in this process; dropping it (served or not), or
/// [`LocalTicket::leave_line`], lets the line move on.
pub(crate) struct LocalTicket {
    order: Arc<TurnOrder>,
    conversation: String,
    number: u64,
    serving: watch::Receiver<u64>,
    /// The line no longer counts this ticket (it left, or was dropped).
    left: bool,
}

impl TurnOrder {
    pub(crate) fn new() -> Arc<TurnOrder> {
        Arc::new(TurnOrder::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next place in `conversation`'s line. Call it in arrival order.
    pub(crate) fn ticket(self: &Arc<Self>, conversation: &str) -> Ticket {
        Ticket::Local(self.local_ticket(conversation))
    }

    fn local_ticket(self: &Arc<Self>, conversation: &str) -> LocalTicket {
        let mut lines = self.lock();
        let line = lines
            .entry(conversation.to_string())
            .or_insert_with(|| Line {
                next: 0,
                serving: watch::Sender::new(0),
                abandoned: BTreeSet::new(),
            });
        let number = line.next;
        line.next += 1;
        LocalTicket {
            order: self.clone(),
            conversation: conversation.to_string(),
            number,
            serving: line.serving.subscribe(),
            left: false,
        }
    }

    /// Conversations with a turn running or waiting.
    #[cfg(test)]
    fn busy_conversations(&self) -> usize {
        self.lock().len()
    }
}

impl LocalTicket {
    async fn wait_turn(&mut self, limit: Duration) -> bool {
        let number = self.number;
        let reached = self.serving.wait_for(|serving| *serving >= number);
        matches!(tokio::time::timeout(limit, reached).await, Ok(Ok(_)))
    }

    /// Takes this ticket out of its line: served, the line moves to the next one; not yet
    /// served, the line skips it when reached. Once only.
    fn leave_line(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let mut lines = self.order.lock();
        let Some(line) = lines.get_mut(&self.conversation) else {
            return;
        };
        if *line.serving.borrow() == self.number {
            line.advance_past(self.number);
        } else {
            line.abandoned.insert(self.number);
        }
        if *line.serving.borrow() == line.next {
            lines.remove(&self.conversation);
        }
    }
}

impl Drop for LocalTicket {
    fn drop(&mut self) {
        self.leave_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any test here waits for a turn that should come.
    const LONG: Duration = Duration::from_secs(3600);

    /// True when `task` is still waiting after paused time moved a whole [`LONG`] ahead.
    /// On paused time the clock only jumps once every task is blocked, so a task still
    /// pending afterwards was really stuck (not merely slow), and the check cannot pass
    /// because it looked too early.
    async fn still_waiting_after_long<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
        tokio::time::timeout(LONG / 2, task).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn turns_start_in_ticket_order() {
        let order = TurnOrder::new();
        let mut first = order.ticket("c");
        let mut second = order.ticket("c");
        let mut other = order.ticket("d");
        let started = tokio::time::Instant::now();
        assert!(
            other.wait_turn(LONG).await,
            "another conversation never waits"
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "the first turn waited");
        assert!(!second.wait_turn(Duration::from_millis(30)).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(30),
            "gave up at its limit"
        );
        assert!(first.wait_turn(LONG).await);
        let mut waiter = tokio::spawn(async move { second.wait_turn(LONG).await });
        assert!(
            still_waiting_after_long(&mut waiter).await,
            "second started before first ended"
        );
        drop(first);
        assert!(
            waiter.await.expect("task"),
            "second served once first ended"
        );
        drop(other);
        assert_eq!(order.busy_conversations(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_given_up_early_does_not_block_the_line() {
        let order = TurnOrder::new();
        let mut first = order.ticket("c");
        let second = order.ticket("c");
        let mut third = order.ticket("c");
        assert!(first.wait_turn(LONG).await);
        drop(second); // gave up while `first` ran
        let mut waiter = tokio::spawn(async move { third.wait_turn(LONG).await });
        assert!(
            still_waiting_after_long(&mut waiter).await,
            "third overtook first"
        );
        drop(first);
        assert!(
            waiter.await.expect("task"),
            "third waits for the skipped second"
        );
        assert_eq!(order.busy_conversations(), 0);
    }

    /// A ticket still held (its busy reply on the way) but out of the line: the line
    /// skips it whether it left before its turn came or while served, and dropping it
    /// afterwards changes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_ticket_out_of_the_line_does_not_hold_it_while_held() {
        let order = TurnOrder::new();
        let mut first = order.ticket("c");
        let mut second = order.ticket("c");
        let mut third = order.ticket("c");
        assert!(first.wait_turn(LONG).await);
        assert!(!second.wait_turn(Duration::from_millis(30)).await);
        second.leave_line().await;
        second.leave_line().await; // once only: not counted twice
        drop(first);
        assert!(
            third.wait_turn(LONG).await,
            "third waited for a held ticket that left the line"
        );
        let mut fourth = order.ticket("c");
        third.leave_line().await; // served, and leaves while still held
        assert!(fourth.wait_turn(LONG).await, "fourth waited for third");
        drop(second);
        drop(third);
        let mut fifth = order.ticket("c");
        let mut waiter = tokio::spawn(async move { fifth.wait_turn(LONG).await });
        assert!(
            still_waiting_after_long(&mut waiter).await,
            "dropping a ticket that had left moved the line again: fifth overtook fourth"
        );
        drop(fourth);
        assert!(waiter.await.expect("task"));
        assert_eq!(order.busy_conversations(), 0);

        // The line emptied while a ticket that left is still held, and starts again at
        // number 0: dropping the old ticket must not move the new line.
        let mut old = order.ticket("c");
        assert!(old.wait_turn(LONG).await);
        old.leave_line().await;
        assert_eq!(order.busy_conversations(), 0);
        let mut new_first = order.ticket("c");
        let mut new_second = order.ticket("c");
        assert!(new_first.wait_turn(LONG).await);
        drop(old);
        let mut waiter = tokio::spawn(async move { new_second.wait_turn(LONG).await });
        assert!(
            still_waiting_after_long(&mut waiter).await,
            "an old ticket's drop let the new line's second overtake its first"
        );
        drop(new_first);
        assert!(waiter.await.expect("task"));
    }
}
