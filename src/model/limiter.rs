//! The per-model concurrency limiter with a bounded, fair queue.
//!
//! Invariants (all under one mutex):
//! - `in_flight <= limit`, always; `peak_in_flight` is the highest value ever seen.
//! - A lane (conversation) has at most one turn in flight, and its turns are granted in
//!   arrival order (FIFO), so replies in one conversation never overtake each other.
//! - Lanes with waiting turns are served round-robin: a flooding lane gets one slot per
//!   round, so a quiet lane's turn waits for at most one grant per other waiting lane.
//! - At most `max_waiting` turns wait; one more is refused at once ([`Acquire::Busy`]).
//! - Whenever a slot is free, no lane that could run is waiting (grants happen on every
//!   release), and a waiter that gave up (timeout or cancelled future) never leaks a slot.
//! - A [`LaneHold`] keeps its lane closed without holding a slot: a turn that moves on to
//!   a fallback model gives its slot back but not its conversation's place in line.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

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

#[derive(Default)]
struct Lane {
    running: bool,
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

struct State {
    limit: usize,
    max_waiting: usize,
    in_flight: usize,
    peak: usize,
    queued: usize,
    next_id: u64,
    lanes: HashMap<String, Lane>,
    /// Lanes with a waiter and nothing running, in service order.
    ready: VecDeque<String>,
}

impl State {
    fn grant(&mut self, lane: &str) {
        self.in_flight += 1;
        self.peak = self.peak.max(self.in_flight);
        self.lanes.entry(lane.to_string()).or_default().running = true;
    }

    /// Hands free slots to waiting lanes, round-robin.
    fn dispatch(&mut self) {
        while self.in_flight < self.limit {
            let Some(name) = self.ready.pop_front() else {
                return;
            };
            let Some(lane) = self.lanes.get_mut(&name) else {
                continue;
            };
            let Some((_, tx)) = lane.waiters.pop_front() else {
                continue;
            };
            self.queued -= 1;
            // The receiver lives in a `Waiting` guard that removes itself under this lock
            // before dropping it, so the send cannot fail; if it did, the slot is not used.
            if tx.send(()).is_ok() {
                self.grant(&name);
            } else if !self.lanes.get(&name).is_some_and(|l| l.waiters.is_empty()) {
                self.ready.push_back(name);
            }
        }
    }

    /// Gives a slot back (the lane may stay closed).
    fn free_slot(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Frees a lane's slot and opens the lane, then grants what can run.
    fn release(&mut self, lane: &str) {
        self.free_slot();
        self.reopen(lane);
        self.dispatch();
    }

    /// Opens a lane again: its next waiter, if any, lines up for a slot.
    fn reopen(&mut self, lane: &str) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.running = false;
            if l.waiters.is_empty() {
                self.lanes.remove(lane);
            } else {
                self.ready.push_back(lane.to_string());
            }
        }
    }
}

/// A per-model limiter. Share it with `Arc`.
pub struct Limiter {
    state: Mutex<State>,
}

/// A granted slot, which also keeps its lane closed; dropping it frees both.
pub struct Permit {
    hold: LaneHold,
}

impl Permit {
    fn new(limiter: Arc<Limiter>, lane: String) -> Permit {
        Permit {
            hold: LaneHold {
                limiter,
                lane,
                holds_slot: true,
            },
        }
    }

    /// Gives the slot to the next lane now but keeps this lane closed until the returned
    /// hold is dropped, so the conversation's next turn cannot overtake this one.
    pub fn into_lane_hold(mut self) -> LaneHold {
        let mut st = self.hold.limiter.lock();
        st.free_slot();
        st.dispatch();
        drop(st);
        self.hold.holds_slot = false;
        self.hold
    }
}

/// A closed lane, with or without its slot (see [`Permit::into_lane_hold`]).
pub struct LaneHold {
    limiter: Arc<Limiter>,
    lane: String,
    holds_slot: bool,
}

impl Drop for LaneHold {
    fn drop(&mut self) {
        let mut st = self.limiter.lock();
        if self.holds_slot {
            st.release(&self.lane);
        } else {
            st.reopen(&self.lane);
            st.dispatch();
        }
    }
}

/// Removes a waiter from the queue if the acquiring future is dropped or times out, and
/// gives back a slot granted in the meantime.
struct Waiting {
    limiter: Arc<Limiter>,
    lane: String,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// Gives up waiting. Returns true when a slot was granted just before.
    fn cancel(&mut self) -> bool {
        let Some(mut rx) = self.rx.take() else {
            return false;
        };
        let mut guard = self.limiter.lock();
        let st = &mut *guard;
        if let Some(lane) = st.lanes.get_mut(&self.lane) {
            if let Some(pos) = lane.waiters.iter().position(|(id, _)| *id == self.id) {
                lane.waiters.remove(pos);
                let (empty, running) = (lane.waiters.is_empty(), lane.running);
                st.queued -= 1;
                if empty {
                    st.ready.retain(|l| l != &self.lane);
                    if !running {
                        st.lanes.remove(&self.lane);
                    }
                }
                return false;
            }
        }
        // Not queued any more: the grant was sent under the lock we now hold.
        rx.try_recv().is_ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.cancel() {
            self.limiter.lock().release(&self.lane);
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
                lanes: HashMap::new(),
                ready: VecDeque::new(),
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

    /// Waits for a slot for `lane` until `deadline`.
    pub async fn acquire(self: &Arc<Self>, lane: &str, deadline: Instant) -> Result<Permit, Busy> {
        let mut waiting = {
            let mut st = self.lock();
            let idle = lane_idle(st.lanes.get(lane));
            if idle && st.in_flight < st.limit {
                st.grant(lane);
                return Ok(Permit::new(self.clone(), lane.to_string()));
            }
            if st.queued >= st.max_waiting {
                return Err(Busy::QueueFull);
            }
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            let entry = st.lanes.entry(lane.to_string()).or_default();
            let first_waiter = entry.waiters.is_empty() && !entry.running;
            entry.waiters.push_back((id, tx));
            st.queued += 1;
            if first_waiter {
                st.ready.push_back(lane.to_string());
            }
            st.dispatch();
            Waiting {
                limiter: self.clone(),
                lane: lane.to_string(),
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
        Ok(Permit::new(self.clone(), std::mem::take(&mut waiting.lane)))
    }
}

/// True when the lane has nothing running and nobody waiting.
fn lane_idle(lane: Option<&Lane>) -> bool {
    match lane {
        None => true,
        Some(l) => !l.running && l.waiters.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// Lanes with waiting turns are served round-robin, each lane in FIFO order.
    #[tokio::test]
    async fn round_robin_across_lanes_fifo_within() {
        let lim = Limiter::new(1, 16);
        let first = lim.acquire("x", far()).await.expect("free slot");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (lane, n) in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)] {
            let (l2, order) = (lim.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = l2.acquire(lane, far()).await.expect("granted");
                order.lock().unwrap().push(format!("{lane}{n}"));
            }));
            // Let the task enqueue before the next one, so arrival order is known.
            while lim.snapshot().queued < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().unwrap(), ["a0", "b0", "a1", "b1", "a2"]);
        let s = lim.snapshot();
        assert_eq!((s.in_flight, s.queued, s.peak_in_flight), (0, 0, 1));
    }

    /// True when `task` is still waiting after paused time moved an hour ahead: the clock
    /// only jumps once every task is blocked, so the task was really stuck, not just slow.
    async fn still_waiting_after_an_hour<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .is_err()
    }

    /// A full queue refuses at once (no time passes), and a waiter gives up exactly at its
    /// deadline, not before and not later: on paused time both are exact.
    #[tokio::test(start_paused = true)]
    async fn full_queue_and_expired_wait_are_busy() {
        let lim = Limiter::new(1, 1);
        let _held = lim.acquire("a", far()).await.expect("free slot");
        let l2 = lim.clone();
        let started = Instant::now();
        let expiry = Duration::from_millis(400);
        let waiter = tokio::spawn(async move {
            let busy = l2.acquire("b", Instant::now() + expiry).await.err();
            (busy, Instant::now())
        });
        while lim.snapshot().queued < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(lim.acquire("c", far()).await.err(), Some(Busy::QueueFull));
        assert_eq!(started.elapsed(), Duration::ZERO, "queue full is immediate");
        let (busy, gave_up_at) = waiter.await.expect("task");
        assert_eq!(busy, Some(Busy::WaitExpired));
        assert_eq!(gave_up_at - started, expiry, "gave up at its deadline");
        assert_eq!(lim.snapshot().queued, 0);
    }

    /// A lane hold frees the slot for other lanes at once, but the held lane's next turn
    /// waits until the hold is dropped.
    #[tokio::test(start_paused = true)]
    async fn lane_hold_gives_the_slot_away_but_not_the_lane() {
        let hour = || Instant::now() + Duration::from_secs(7200);
        let lim = Limiter::new(1, 16);
        let first = lim.acquire("a", hour()).await.expect("free slot");
        let (l_same, l_other) = (lim.clone(), lim.clone());
        let mut same = tokio::spawn(async move { l_same.acquire("a", hour()).await.is_ok() });
        let other = tokio::spawn(async move { l_other.acquire("b", hour()).await.is_ok() });
        while lim.snapshot().queued < 2 {
            tokio::task::yield_now().await;
        }
        let hold = first.into_lane_hold();
        assert!(other.await.expect("task"), "lane b gets the freed slot");
        // b's permit was dropped when its task ended; lane a is still closed.
        assert!(
            still_waiting_after_an_hour(&mut same).await,
            "lane a overtook its own held turn"
        );
        assert_eq!(lim.snapshot().queued, 1);
        drop(hold);
        assert!(same.await.expect("task"));
        let s = lim.snapshot();
        assert_eq!((s.in_flight, s.queued), (0, 0));
    }
}
