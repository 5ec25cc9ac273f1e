//! One model name served by several runtimes (`models.NAME.replicas`): which replica a
//! request goes to, each replica's own concurrency limit, and the passive cooldown of a
//! replica that keeps failing.
//!
//! Invariants:
//! - A replica never has more requests in flight than its own limit: a [`ReplicaLease`]
//!   exists only for a slot [`ReplicaSlots::try_acquire`] granted, and gives it back once.
//! - Selection is least in flight by the power of two random choices: two distinct
//!   replicas drawn at random among those that may take the request, the one with fewer in
//!   flight wins, a tie goes to the first drawn (itself random).
//! - A replica is *cooling down* for [`COOLDOWN`] after [`FAILURES_BEFORE_COOLDOWN`]
//!   failures in a row that are its own fault ([`replica_at_fault`]: refused, 5xx, 401/403,
//!   404, 429, its own first-token or idle timeout, a broken or empty stream, before or
//!   after the first token): it gets no request while any replica of the model is
//!   healthy. When every replica is cooling down, one with room is tried anyway (better a
//!   likely failure than certain silence), and a turn tries at most one cooling replica
//!   ([`ReplicaLease::was_cooling`]). Only a successful chat makes it healthy again; a
//!   good health probe does not (a runtime may answer `/models` and fail every chat).
//! - Healthy replicas all full while a cooling one has room: the request waits for a
//!   healthy slot (bounded by the caller's deadline); it is not sent to the cooling one.
//!
//! The seam: in-flight counts live behind [`ReplicaSlots`] (`try_acquire(replica, limit)`
//! / `release(replica)` / `in_flight(replica)`). [`LocalSlots`] counts in this process; a
//! shared backend (Redis, with leases that expire when a bot replica dies) can implement
//! the same trait so every bot replica selects on, and is bounded by, the global counts.
//! Selection and cooldown stay here and need nothing else from the backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{ModelError, TimeoutPhase};

/// Failures in a row after which a replica cools down.
pub(crate) const FAILURES_BEFORE_COOLDOWN: u32 = 3;
/// How long a failing replica gets no traffic while others are healthy.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(30);

/// Where the in-flight count of each replica lives (see the module's "seam").
///
/// Invariant for implementors: `try_acquire` succeeds only when the count is below
/// `limit`, and then raises it by one atomically; `release` lowers it by one.
pub(crate) trait ReplicaSlots: Send + Sync {
    /// Takes one slot of `replica` when fewer than `limit` are in flight there.
    fn try_acquire(&self, replica: usize, limit: usize) -> bool;
    /// Gives back one slot taken with `try_acquire`.
    fn release(&self, replica: usize);
    /// Requests in flight at `replica` now.
    fn in_flight(&self, replica: usize) -> usize;
}

/// In-flight counts of this process only.
pub(crate) struct LocalSlots {
    counts: Vec<AtomicUsize>,
}

impl LocalSlots {
    pub(crate) fn new(replicas: usize) -> LocalSlots {
        LocalSlots {
            counts: (0..replicas).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

impl ReplicaSlots for LocalSlots {
    fn try_acquire(&self, replica: usize, limit: usize) -> bool {
        let Some(count) = self.counts.get(replica) else {
            return false;
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, replica: usize) {
        if let Some(count) = self.counts.get(replica) {
            // Never below zero, whatever a caller does.
            let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    fn in_flight(&self, replica: usize) -> usize {
        self.counts
            .get(replica)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

/// A replica's health as the selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicaState {
    Healthy,
    /// No traffic while another replica is healthy, until the instant.
    CoolingDown(Instant),
}

impl ReplicaState {
    /// The name status and metrics show.
    pub(crate) fn label(self, now: Instant) -> &'static str {
        if self.cooling_at(now) {
            "cooling_down"
        } else {
            "healthy"
        }
    }

    fn cooling_at(self, now: Instant) -> bool {
        matches!(self, ReplicaState::CoolingDown(until) if now < until)
    }
}

#[derive(Debug)]
struct Health {
    state: ReplicaState,
    failures_in_a_row: u32,
    failures: u64,
    served: u64,
}

/// One replica's figures for status, healthcheck and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaFigures {
    pub(crate) in_flight: usize,
    pub(crate) limit: usize,
    pub(crate) state: &'static str,
    pub(crate) failures: u64,
    pub(crate) failures_in_a_row: u32,
    pub(crate) served: u64,
}

/// True when `error` is the replica's own fault, as seen from a model with several
/// replicas: another replica of the same model may well answer (so, before the first
/// token, the turn is retried there) and it counts towards the cooldown, before or after
/// the first token.
///
/// Not the replica's fault: the turn's own deadline running out ([`TimeoutPhase::Total`],
/// a retry or a queued turn that met the turn's budget), a lost global slot lease, a
/// prompt over the context, and the other 4xx (a malformed request would fail anywhere). A 401/403 (a per-replica key or
/// proxy), 404 (the model not served there) and 429 (rate limited there) are the replica's.
pub(crate) fn replica_at_fault(error: &ModelError) -> bool {
    match error {
        ModelError::Timeout(TimeoutPhase::Total) => false,
        ModelError::Timeout(_) | ModelError::Connect(_) | ModelError::Auth { .. } => true,
        ModelError::Http { status, .. } => matches!(status, 404 | 408 | 429) || *status >= 500,
        ModelError::Stream(_)
        | ModelError::Empty
        | ModelError::EmptyAnswer
        | ModelError::Protocol(_) => true,
        // The bot's own global slot (Redis) ended: nothing about the runtime.
        ModelError::ContextOverflow(_) | ModelError::LeaseLost => false,
    }
}

/// The replicas of one model: their limits, health and in-flight slots.
pub(crate) struct ReplicaSet {
    limits: Vec<usize>,
    health: Vec<Mutex<Health>>,
    slots: Arc<dyn ReplicaSlots>,
    /// Woken whenever a slot is given back or a replica becomes healthy.
    changed: Notify,
}

/// One request's slot at one replica; dropping it gives the slot back.
pub(crate) struct ReplicaLease<'a> {
    set: &'a ReplicaSet,
    index: usize,
    was_cooling: bool,
}

impl ReplicaLease<'_> {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// True when the replica was cooling down when picked (every untried one was): a
    /// turn that saw it fail tries no other (they are all cooling too).
    pub(crate) fn was_cooling(&self) -> bool {
        self.was_cooling
    }
}

impl Drop for ReplicaLease<'_> {
    fn drop(&mut self) {
        self.set.slots.release(self.index);
        self.set.changed.notify_waiters();
    }
}

impl ReplicaSet {
    /// Replicas with these limits, counted in `slots`.
    pub(crate) fn new(limits: Vec<usize>, slots: Arc<dyn ReplicaSlots>) -> ReplicaSet {
        let health = limits
            .iter()
            .map(|_| {
                Mutex::new(Health {
                    state: ReplicaState::Healthy,
                    failures_in_a_row: 0,
                    failures: 0,
                    served: 0,
                })
            })
            .collect();
        ReplicaSet {
            limits: limits.into_iter().map(|l| l.max(1)).collect(),
            health,
            slots,
            changed: Notify::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.limits.len()
    }

    /// The sum of the replicas' own limits (saturating: never overflows, whatever the
    /// limits).
    pub(crate) fn total_limit(&self) -> usize {
        self.limits.iter().fold(0, |sum, l| sum.saturating_add(*l))
    }

    fn health(&self, i: usize) -> std::sync::MutexGuard<'_, Health> {
        self.health[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cooling(&self, i: usize, now: Instant) -> bool {
        self.health(i).state.cooling_at(now)
    }

    /// Takes a slot at the replica the selection picks among those not in `tried`, or
    /// `None` when the request has to wait (or every replica was tried).
    pub(crate) fn try_pick(&self, tried: &[usize]) -> Option<ReplicaLease<'_>> {
        let now = Instant::now();
        let untried: Vec<usize> = (0..self.len()).filter(|i| !tried.contains(i)).collect();
        let healthy: Vec<usize> = untried
            .iter()
            .copied()
            .filter(|&i| !self.cooling(i, now))
            .collect();
        // Every untried replica cooling down: try one with room anyway.
        let was_cooling = healthy.is_empty();
        let pool = if was_cooling { untried } else { healthy };
        // A few rounds: a slot seen free can be taken by another turn before our
        // `try_acquire`; then pick again among what is left.
        for _ in 0..4 {
            let room: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|&i| self.slots.in_flight(i) < self.limits[i])
                .collect();
            let index = two_choices(&room, |i| self.slots.in_flight(i))?;
            if self.slots.try_acquire(index, self.limits[index]) {
                return Some(ReplicaLease {
                    set: self,
                    index,
                    was_cooling,
                });
            }
        }
        None
    }

    /// Like [`Self::try_pick`], waiting until `deadline` for a slot to come free (or a
    /// cooldown to end). `None` when every replica was tried or the deadline passed.
    pub(crate) async fn pick(
        &self,
        tried: &[usize],
        deadline: Instant,
    ) -> Option<ReplicaLease<'_>> {
        if tried.len() >= self.len() {
            return None;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(lease) = self.try_pick(tried) {
                return Some(lease);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wake = self
                .next_cooldown_end(now)
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn next_cooldown_end(&self, now: Instant) -> Option<Instant> {
        (0..self.len())
            .filter_map(|i| match self.health(i).state {
                ReplicaState::CoolingDown(until) if until > now => Some(until),
                _ => None,
            })
            .min()
    }

    /// `replica` answered: it is healthy, its failure streak ends.
    pub(crate) fn succeeded(&self, replica: usize) {
        let was_cooling = {
            let mut h = self.health(replica);
            h.served += 1;
            h.failures_in_a_row = 0;
            std::mem::replace(&mut h.state, ReplicaState::Healthy) != ReplicaState::Healthy
        };
        if was_cooling {
            self.changed.notify_waiters();
        }
    }

    /// `replica` failed in a way that [`replica_at_fault`]: after
    /// [`FAILURES_BEFORE_COOLDOWN`] in a row it cools down for [`COOLDOWN`].
    pub(crate) fn failed(&self, replica: usize) {
        let mut h = self.health(replica);
        h.failures += 1;
        h.failures_in_a_row += 1;
        if h.failures_in_a_row >= FAILURES_BEFORE_COOLDOWN {
            h.state = ReplicaState::CoolingDown(Instant::now() + COOLDOWN);
            tracing::info!(
                replica,
                failures_in_a_row = h.failures_in_a_row,
                cooldown_s = COOLDOWN.as_secs(),
                "model replica cooling down"
            );
        }
    }

    /// Each replica's figures, in config order.
    pub(crate) fn figures(&self) -> Vec<ReplicaFigures> {
        let now = Instant::now();
        (0..self.len())
            .map(|i| {
                let h = self.health(i);
                ReplicaFigures {
                    in_flight: self.slots.in_flight(i),
                    limit: self.limits[i],
                    state: h.state.label(now),
                    failures: h.failures,
                    failures_in_a_row: h.failures_in_a_row,
                    served: h.served,
                }
            })
            .collect()
    }
}

/// The power of two random choices over `candidates`: two distinct ones drawn at random,
/// the one with fewer `in_flight` wins, a tie goes to the first drawn. `None` when empty.
fn two_choices(candidates: &[usize], in_flight: impl Fn(usize) -> usize) -> Option<usize> {
    let mut rng = rand::rng();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            let (a, b) = (candidates[a], candidates[b]);
            Some(if in_flight(b) < in_flight(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(limits: &[usize]) -> ReplicaSet {
        ReplicaSet::new(limits.to_vec(), Arc::new(LocalSlots::new(limits.len())))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Never above a replica's own limit; least in flight wins; with two replicas the
    /// two choices are always both, so the less loaded one always gets the request.
    #[tokio::test(start_paused = true)]
    async fn least_in_flight_and_never_above_a_replicas_limit() {
        let s = set(&[3, 1]);
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(s.try_pick(&[]).expect("room left"));
        }
        assert!(s.try_pick(&[]).is_none(), "4 slots in all, all taken");
        let f = s.figures();
        assert_eq!((f[0].in_flight, f[1].in_flight), (3, 1));
        // The first two went one to each (least in flight), whatever the draw.
        assert_ne!(leases[0].index(), leases[1].index());
        drop(leases);
        assert_eq!(s.figures()[0].in_flight + s.figures()[1].in_flight, 0);
        // Equal loads: both replicas get picked over many draws (random tie-break).
        let mut seen = [0usize; 2];
        for _ in 0..200 {
            seen[s.try_pick(&[]).expect("free").index()] += 1;
        }
        assert!(
            seen[0] > 20 && seen[1] > 20,
            "ties broken at random: {seen:?}"
        );
    }

    /// Three failures in a row cool a replica down: no traffic while the other is
    /// healthy, until the cooldown ends (on paused time), or a probe answers.
    #[tokio::test(start_paused = true)]
    async fn a_failing_replica_cools_down_and_comes_back() {
        let s = set(&[4, 4]);
        s.failed(0);
        s.failed(0);
        assert_eq!(
            s.figures()[0].state,
            "healthy",
            "two failures are not enough"
        );
        s.succeeded(0);
        s.failed(0);
        s.failed(0);
        assert_eq!(
            s.figures()[0].state,
            "healthy",
            "a success ended the streak"
        );
        s.failed(0);
        assert_eq!(s.figures()[0].state, "cooling_down");
        for _ in 0..50 {
            let lease = s.try_pick(&[]).expect("the healthy one");
            assert_eq!(lease.index(), 1, "no request to a cooling replica");
        }
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert_eq!(s.figures()[0].state, "cooling_down");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.figures()[0].state, "healthy", "back after the cooldown");
        for _ in 0..3 {
            s.failed(0);
        }
        assert_eq!(s.figures()[0].state, "cooling_down");
        s.succeeded(0);
        assert_eq!(
            s.figures()[0].state,
            "healthy",
            "a successful chat ends it early"
        );
        assert_eq!(s.figures()[0].failures, 8);
    }

    /// Every replica cooling down: one with room is still tried. Healthy ones full while
    /// a cooling one has room: the request waits for a healthy slot instead.
    #[tokio::test(start_paused = true)]
    async fn all_cooling_tries_anyway_and_a_full_healthy_one_is_waited_for() {
        let s = Arc::new(set(&[1, 1]));
        for _ in 0..3 {
            s.failed(0);
        }
        let busy = s.try_pick(&[]).expect("the healthy one");
        assert_eq!(busy.index(), 1);
        assert!(
            s.try_pick(&[]).is_none(),
            "waits rather than use the cooling one"
        );
        let started = Instant::now();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                let lease = s.pick(&[], far()).await.map(|l| l.index());
                (lease, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "still waiting for a healthy slot");
        drop(busy);
        let (got, waited) = waiter.await.expect("task");
        assert_eq!(got, Some(1), "the freed healthy slot");
        assert_eq!(
            waited,
            Duration::from_secs(1),
            "woken by the release, not a timer"
        );
        for _ in 0..3 {
            s.failed(1);
        }
        assert!(
            s.try_pick(&[1]).is_some(),
            "all cooling: one is tried anyway"
        );
        assert!(
            s.pick(&[0, 1], far()).await.is_none(),
            "every replica tried"
        );
    }

    /// The wait for a replica ends at its deadline, or when a cooldown ends.
    #[tokio::test(start_paused = true)]
    async fn a_replica_wait_ends_at_the_deadline_or_the_cooldown_end() {
        let s = set(&[1, 1]);
        let _held = s.try_pick(&[]).expect("one");
        let _held2 = s.try_pick(&[]).expect("two");
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        assert!(s.pick(&[], deadline).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    /// Issue 14 red team: with several replicas, 401/403/404/429, a broken or empty
    /// stream and the replica's own timeouts are its fault; the turn's own deadline, an
    /// oversized prompt and other 4xx are not.
    #[test]
    fn which_failures_are_the_replicas_fault() {
        let http = |status| ModelError::Http {
            status,
            error: Default::default(),
        };
        let auth = |status| ModelError::Auth {
            status,
            error: Default::default(),
        };
        for fault in [
            ModelError::Connect("refused".into()),
            http(503),
            http(500),
            http(404),
            http(429),
            http(408),
            auth(401),
            auth(403),
            ModelError::Timeout(TimeoutPhase::Connect),
            ModelError::Timeout(TimeoutPhase::FirstToken),
            ModelError::Timeout(TimeoutPhase::Idle),
            ModelError::Stream("ended without [DONE] or finish_reason".into()),
            ModelError::Empty,
            ModelError::EmptyAnswer,
        ] {
            assert!(replica_at_fault(&fault), "{fault:?}");
        }
        for not in [
            ModelError::Timeout(TimeoutPhase::Total),
            ModelError::ContextOverflow(Default::default()),
            ModelError::LeaseLost,
            http(400),
            http(413),
            http(422),
        ] {
            assert!(!replica_at_fault(&not), "{not:?}");
        }
    }

    /// Issue 14 red team: `max_concurrency` values near `usize::MAX` add up without
    /// overflow (a panic at daemon start before).
    #[test]
    fn total_limit_saturates() {
        assert_eq!(set(&[usize::MAX, usize::MAX]).total_limit(), usize::MAX);
        assert_eq!(set(&[2, 3]).total_limit(), 5);
    }

    /// A cooling replica picked because every untried one is cooling says so (the turn
    /// then tries no other); a healthy pick does not.
    #[tokio::test(start_paused = true)]
    async fn a_lease_knows_it_went_to_a_cooling_replica() {
        let s = set(&[2, 2]);
        for _ in 0..3 {
            s.failed(0);
        }
        let healthy = s.try_pick(&[]).expect("room");
        assert_eq!((healthy.index(), healthy.was_cooling()), (1, false));
        let cooling = s.try_pick(&[1]).expect("all untried cooling: tried anyway");
        assert_eq!((cooling.index(), cooling.was_cooling()), (0, true));
    }
}
