//! The per-model concurrency limiter with a bounded queue, fair across conversations.
//!
//! Order within a conversation is not this module's job: the bot's turn-order tickets
//! (`bot::order`) let one turn of a conversation at a time reach the model, and
//! keep its place through a fallback. The limiter shares the model's slots between
//! conversations.
//!
//! Invariants (all under one mutex):
//! - `in_flight <= limit`, always; `peak_in_flight` is the highest value ever seen.
//! - A free slot goes to the waiting conversation served least recently (one never
//!   served, or not within the last [`REMEMBERED_GRANTS`] grants, counts as served
//!   longest ago; ties go in arrival order), each conversation's waiters in arrival
//!   order. So a conversation with many waiting turns gets one grant per round, a newly
//!   active (quiet) conversation gets the next free slot instead of queueing behind the
//!   flood, and a waiting conversation is passed by each other conversation at most once
//!   (a conversation just served counts as the most recently served).
//! - At most `max_waiting` turns wait; one more is refused at once ([`Busy::QueueFull`]).
//! - Whenever a slot is free, nobody waits (grants happen on every release), and a waiter
//!   that gave up (timeout or cancelled future) never leaks a slot.
//! - Memory: a conversation's entry lives while it has waiters; the last-grant stamps are
//!   kept for at most 2 x [`REMEMBERED_GRANTS`] conversations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

/// How many of the latest grants the service order remembers. A conversation last
/// served before them is ordered as never served (it is older than every remembered one,
/// so the least-recently-served order stays exact apart from ties between those).
pub(crate) const REMEMBERED_GRANTS: u64 = 1024;

/// The figures the status report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterSnapshot {
    pub limit: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub peak_in_flight: usize,
}

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_waiting` turns were already waiting.
    QueueFull,
    /// The wait ran past its deadline.
    WaitExpired,
}

/// One waiting turn: its id (to find it when it gives up) and where its grant goes.
type Waiter = (u64, oneshot::Sender<()>);

/// A waiting conversation's place in the service order: (its last grant's stamp, 0 when
/// none is remembered; the id of its waiter that made it wait), smallest first.
type ServiceKey = (u64, u64);

/// The waiters of one conversation and its current place in the service order.
struct Line {
    waiters: VecDeque<Waiter>,
    key: ServiceKey,
}

struct State {
    limit: usize,
    max_waiting: usize,
    in_flight: usize,
    peak: usize,
    queued: usize,
    next_id: u64,
    /// Grants so far: the stamp of the latest one.
    grants: u64,
    /// Waiters by conversation; a conversation is here only while it has a waiter.
    waiting: HashMap<String, Line>,
    /// The conversations of `waiting`, each once, by service key.
    ready: BTreeMap<ServiceKey, String>,
    /// The stamp of each conversation's latest grant (the recent ones only).
    last_grant: HashMap<String, u64>,
}

impl State {
    fn grant(&mut self) {
        self.in_flight += 1;
        self.peak = self.peak.max(self.in_flight);
    }

    /// Stamps a grant to `conversation` and returns the stamp; forgets stamps older than
    /// the latest [`REMEMBERED_GRANTS`] once more than twice that many are kept.
    fn stamp(&mut self, conversation: &str) -> u64 {
        self.grants += 1;
        let stamp = self.grants;
        match self.last_grant.get_mut(conversation) {
            Some(s) => *s = stamp,
            None => {
                if self.last_grant.len() as u64 >= 2 * REMEMBERED_GRANTS {
                    let oldest_kept = stamp.saturating_sub(REMEMBERED_GRANTS);
                    self.last_grant.retain(|_, s| *s > oldest_kept);
                }
                self.last_grant.insert(conversation.to_string(), stamp);
            }
        }
        stamp
    }

    /// Hands free slots to waiting conversations, least recently served first.
    fn dispatch(&mut self) {
        while self.in_flight < self.limit {
            let Some((_, conversation)) = self.ready.pop_first() else {
                return;
            };
            let Some(line) = self.waiting.get_mut(&conversation) else {
                continue;
            };
            let Some((_, tx)) = line.waiters.pop_front() else {
                self.waiting.remove(&conversation);
                continue;
            };
            let next = line.waiters.front().map(|(id, _)| *id);
            self.queued -= 1;
            // The receiver lives in a `Waiting` guard that removes itself under this lock
            // before dropping it, so the send cannot fail; if it did, the slot is not used.
            let stamp = if tx.send(()).is_ok() {
                self.grant();
                self.stamp(&conversation)
            } else {
                self.last_grant.get(&conversation).copied().unwrap_or(0)
            };
            match next {
                Some(id) => {
                    let key = (stamp, id);
                    if let Some(line) = self.waiting.get_mut(&conversation) {
                        line.key = key;
                    }
                    self.ready.insert(key, conversation);
                }
                None => {
                    self.waiting.remove(&conversation);
                }
            }
        }
    }

    /// Gives a slot back and grants what can run.
    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.dispatch();
    }

    /// Queues a waiter for `conversation`, behind its earlier waiters.
    fn enqueue(&mut self, conversation: &str, tx: oneshot::Sender<()>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = match self.waiting.get_mut(conversation) {
            Some(line) => line,
            None => {
                let key = (self.last_grant.get(conversation).copied().unwrap_or(0), id);
                self.ready.insert(key, conversation.to_string());
                self.waiting
                    .entry(conversation.to_string())
                    .or_insert(Line {
                        waiters: VecDeque::new(),
                        key,
                    })
            }
        };
        line.waiters.push_back((id, tx));
        self.queued += 1;
        id
    }

    /// Removes waiter `id` of `conversation`; false when it is not queued (granted).
    fn dequeue(&mut self, conversation: &str, id: u64) -> bool {
        let Some(line) = self.waiting.get_mut(conversation) else {
            return false;
        };
        let Some(pos) = line.waiters.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        line.waiters.remove(pos);
        self.queued -= 1;
        if line.waiters.is_empty() {
            let key = line.key;
            self.waiting.remove(conversation);
            self.ready.remove(&key);
        }
        true
    }
}

/// A per-model limiter. Share it with `Arc`.
pub struct Limiter {
    state: Mutex<State>,
}

/// A granted slot; dropping it gives the slot to the next waiter.
pub struct Permit {
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.lock().release();
    }
}

/// Removes a waiter from the queue if the acquiring future is dropped or times out, and
/// gives back a slot granted in the meantime.
struct Waiting {
    limiter: Arc<Limiter>,
    conversation: String,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// Gives up waiting. Returns true when a slot was granted just before.
    fn cancel(&mut self) -> bool {
        let Some(mut rx) = self.rx.take() else {
            return false;
        };
        let mut st = self.limiter.lock();
        if st.dequeue(&self.conversation, self.id) {
            return false;
        }
        // Not queued any more: the grant was sent under the lock we now hold.
        rx.try_recv().is_ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.cancel() {
            self.limiter.lock().release();
        }
    }
}

impl Limiter {
    pub fn new(limit: usize, max_waiting: usize) -> Arc<Self> {
        Arc::new(Limiter {
            state: Mutex::new(State {
                limit: limit.max(1),
                max_waiting,
                in_flight: 0,
                peak: 0,
                queued: 0,
                next_id: 0,
                grants: 0,
                waiting: HashMap::new(),
                ready: BTreeMap::new(),
                last_grant: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way
        // worse than refusing all service, so keep going with the inner state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> LimiterSnapshot {
        let st = self.lock();
        LimiterSnapshot {
            limit: st.limit,
            in_flight: st.in_flight,
            queued: st.queued,
            peak_in_flight: st.peak,
        }
    }

    /// Waits for a slot for a turn of `conversation` until `deadline`.
    pub async fn acquire(
        self: &Arc<Self>,
        conversation: &str,
        deadline: Instant,
    ) -> Result<Permit, Busy> {
        let mut waiting = {
            let mut st = self.lock();
            if st.queued == 0 && st.in_flight < st.limit {
                st.grant();
                st.stamp(conversation);
                return Ok(Permit {
                    limiter: self.clone(),
                });
            }
            if st.queued >= st.max_waiting {
                return Err(Busy::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let id = st.enqueue(conversation, tx);
            st.dispatch();
            Waiting {
                limiter: self.clone(),
                conversation: conversation.to_string(),
                id,
                rx: Some(rx),
            }
        };
        let granted = match waiting.rx.as_mut() {
            Some(rx) => matches!(timeout_at(deadline, rx).await, Ok(Ok(()))),
            None => false,
        };
        if granted {
            waiting.rx = None;
        } else if !waiting.cancel() {
            return Err(Busy::WaitExpired);
        }
        Ok(Permit {
            limiter: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// Lets spawned acquirers run until `n` turns wait (at most 1000 yields).
    async fn until_queued(lim: &Limiter, n: usize) {
        for _ in 0..1000 {
            if lim.snapshot().queued >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} waiters never queued: {:?}", lim.snapshot());
    }

    /// Conversations with waiting turns are served round-robin, each in FIFO order.
    #[tokio::test(start_paused = true)]
    async fn round_robin_across_conversations_fifo_within() {
        let lim = Limiter::new(1, 16);
        let first = lim.acquire("x", far()).await.expect("free slot");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (conversation, n) in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)] {
            let (l2, order) = (lim.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = l2.acquire(conversation, far()).await.expect("granted");
                order.lock().unwrap().push(format!("{conversation}{n}"));
            }));
            // Each task queues before the next starts, so arrival order is known.
            until_queued(&lim, tasks.len()).await;
        }
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().unwrap(), ["a0", "b0", "a1", "b1", "a2"]);
        let s = lim.snapshot();
        assert_eq!((s.in_flight, s.queued, s.peak_in_flight), (0, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_is_busy_at_once_and_an_expired_wait_at_its_deadline() {
        let lim = Limiter::new(1, 1);
        let _held = lim.acquire("a", far()).await.expect("free slot");
        let l2 = lim.clone();
        let started = Instant::now();
        let waiter = tokio::spawn(async move {
            let r = l2.acquire("b", started + Duration::from_millis(50)).await;
            (r.err(), started.elapsed())
        });
        until_queued(&lim, 1).await;
        assert_eq!(lim.acquire("c", far()).await.err(), Some(Busy::QueueFull));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a full queue refuses at once"
        );
        let (why, waited) = waiter.await.expect("task");
        assert_eq!(why, Some(Busy::WaitExpired));
        assert_eq!(waited, Duration::from_millis(50));
        assert_eq!(lim.snapshot().queued, 0);
    }

    /// Order within a conversation belongs to the bot's turn-order tickets: the limiter
    /// shares slots, it does not hold a conversation's second turn back.
    #[tokio::test(start_paused = true)]
    async fn the_limiter_shares_slots_and_leaves_order_to_the_caller() {
        let lim = Limiter::new(2, 16);
        let a = lim.acquire("c", far()).await.expect("first slot");
        let b = lim.acquire("c", far()).await.expect("second slot");
        assert_eq!(lim.snapshot().in_flight, 2);
        drop((a, b));
        assert_eq!(lim.snapshot().in_flight, 0);
    }

    /// A waiter dropped (its turn gave up) leaves the queue and the slot count intact.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaks_nothing() {
        let lim = Limiter::new(1, 4);
        let held = lim.acquire("a", far()).await.expect("free slot");
        let l2 = lim.clone();
        let waiter = tokio::spawn(async move { l2.acquire("b", far()).await.is_ok() });
        until_queued(&lim, 1).await;
        waiter.abort();
        assert!(waiter.await.is_err(), "aborted");
        assert_eq!(lim.snapshot().queued, 0);
        drop(held);
        let again = lim.acquire("d", Instant::now()).await;
        assert!(again.is_ok(), "the slot came back");
    }
    /// One model turn of `conversation`: waits for a slot, holds it for `service`, and
    /// records (conversation, grant time) in `log`; checks the limit while it holds it.
    async fn turn(
        lim: Arc<Limiter>,
        conversation: String,
        service: Duration,
        log: Arc<Mutex<Vec<(String, Instant)>>>,
    ) {
        let _slot = lim.acquire(&conversation, far()).await.expect("granted");
        let s = lim.snapshot();
        assert!(s.in_flight <= s.limit, "limit exceeded: {s:?}");
        log.lock().unwrap().push((conversation, Instant::now()));
        tokio::time::sleep(service).await;
    }

    /// A flood as the bot makes it (each flooding conversation has one turn at the model
    /// or waiting at a time, the next one queued as the previous ends): a quiet
    /// conversation that asks is served at the next free slot, not after every waiting
    /// flood conversation; the flood keeps its round-robin and the limit holds.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_conversation_gets_the_next_free_slot_during_a_flood() {
        const SERVICE: Duration = Duration::from_millis(200);
        let lim = Limiter::new(2, 64);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut flood = Vec::new();
        for f in 0..6 {
            let (lim, log) = (lim.clone(), log.clone());
            flood.push(tokio::spawn(async move {
                for _ in 0..10 {
                    turn(lim.clone(), format!("flood{f}"), SERVICE, log.clone()).await;
                }
            }));
        }
        // Mid-flood, between two grants: every slot busy, four flood conversations waiting.
        tokio::time::sleep(SERVICE * 3 + SERVICE / 2).await;
        assert_eq!(lim.snapshot().queued, 4, "{:?}", lim.snapshot());
        let asked = Instant::now();
        turn(lim.clone(), "quiet".into(), SERVICE, log.clone()).await;
        let granted = log
            .lock()
            .unwrap()
            .iter()
            .find(|(c, _)| c == "quiet")
            .map(|(_, at)| *at)
            .expect("the quiet turn ran");
        assert!(
            granted - asked <= SERVICE / 2,
            "the quiet conversation waited {:?} for a slot that freed after {:?}",
            granted - asked,
            SERVICE / 2
        );
        for t in flood {
            t.await.expect("flood task");
        }
        // Round-robin kept: no flood conversation got a second grant while another
        // flood conversation that had been waiting longer was still waiting.
        let grants = log.lock().unwrap();
        let per_round: Vec<&str> = grants
            .iter()
            .filter(|(c, _)| c != "quiet")
            .map(|(c, _)| c.as_str())
            .take(12)
            .collect();
        for round in per_round.chunks(6) {
            let mut names = round.to_vec();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), 6, "one grant each per round: {round:?}");
        }
        assert_eq!(lim.snapshot().peak_in_flight, 2);
    }
    /// The service order's memory stays bounded however many conversations pass.
    #[tokio::test(start_paused = true)]
    async fn the_grant_stamps_stay_bounded() {
        let lim = Limiter::new(1, 4);
        for c in 0..3 * REMEMBERED_GRANTS {
            drop(
                lim.acquire(&format!("c{c}"), far())
                    .await
                    .expect("free slot"),
            );
        }
        let st = lim.lock();
        assert!(
            st.last_grant.len() as u64 <= 2 * REMEMBERED_GRANTS,
            "{}",
            st.last_grant.len()
        );
        assert!(st.waiting.is_empty() && st.ready.is_empty());
    }
}
