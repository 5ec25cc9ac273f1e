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
//!   failures in a row (connect refused, 5xx, a timeout before the first token...): it gets
//!   no request while any replica of the model is healthy. When every replica is cooling
//!   down, one with room is tried anyway (better a likely failure than certain silence);
//!   a success, or a good health probe, makes it healthy again.
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

/// True when `error` says the replica itself is in trouble (not the request): it counts
/// towards the cooldown. A timeout after the first token is the answer's, not the
/// replica's, and so is a refused prompt or key.
pub(crate) fn counts_against_replica(error: &ModelError, got_first_token: bool) -> bool {
    match error {
        ModelError::Connect(_) => true,
        ModelError::Timeout(TimeoutPhase::Connect | TimeoutPhase::FirstToken) => true,
        ModelError::Timeout(_) => !got_first_token,
        ModelError::Http { status, .. } => *status >= 500,
        _ => false,
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
}

impl ReplicaLease<'_> {
    pub(crate) fn index(&self) -> usize {
        self.index
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

    /// The sum of the replicas' own limits.
    pub(crate) fn total_limit(&self) -> usize {
        self.limits.iter().sum()
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
        let pool = if healthy.is_empty() { untried } else { healthy };
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
                return Some(ReplicaLease { set: self, index });
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

    /// `replica` failed in a way that [`counts_against_replica`]: after
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

    /// A health probe of `replica` answered: it is healthy again (its streak ends).
    pub(crate) fn probe_answered(&self, replica: usize) {
        let was_cooling = {
            let mut h = self.health(replica);
            h.failures_in_a_row = 0;
            std::mem::replace(&mut h.state, ReplicaState::Healthy) != ReplicaState::Healthy
        };
        if was_cooling {
            self.changed.notify_waiters();
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
        s.probe_answered(0);
        assert_eq!(
            s.figures()[0].state,
            "healthy",
            "a good probe ends it early"
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

    #[test]
    fn which_failures_count_against_a_replica() {
        let http = |status| ModelError::Http {
            status,
            error: Default::default(),
        };
        assert!(counts_against_replica(
            &ModelError::Connect("refused".into()),
            false
        ));
        assert!(counts_against_replica(&http(503), false));
        assert!(counts_against_replica(
            &ModelError::Timeout(TimeoutPhase::FirstToken),
            false
        ));
        assert!(!counts_against_replica(
            &ModelError::Timeout(TimeoutPhase::Idle),
            true
        ));
        assert!(!counts_against_replica(&http(400), false));
        assert!(!counts_against_replica(&http(429), false));
    }
}
