//! What the fake model counted and saw, and the per-request guard that keeps those counts
//! true (see the module invariants in [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::behavior::{FakeBehavior, FakeConfig};

/// One request as the server saw it (test-only data: it holds the prompt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenRequest {
    pub model: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// What the server counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FakeStats {
    pub requests: u64,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Responses sent to the end.
    pub completed: u64,
    pub by_model: BTreeMap<String, u64>,
    /// The last [`RECENT_REQUESTS`] requests, oldest first.
    pub recent: VecDeque<SeenRequest>,
    /// Requests being served now: holding a slot (when `slots` is set), past the wait.
    pub busy: usize,
    /// The integral of `busy` over time, in slot-microseconds, up to when these stats were
    /// read: busy slot-time. Utilization over a window = its growth / (slots x window).
    pub busy_slot_us: u64,
    /// When `busy` last changed (to bring `busy_slot_us` up to date).
    #[serde(skip)]
    busy_since: Option<Instant>,
}

impl FakeStats {
    /// Adds the busy slot-time since the last change, up to `now`.
    fn settle_busy(&mut self, now: Instant) {
        if let Some(since) = self.busy_since {
            let us = now.saturating_duration_since(since).as_micros() as u64;
            self.busy_slot_us += self.busy as u64 * us;
        }
        self.busy_since = Some(now);
    }
}

/// Requests kept in [`FakeStats::recent`].
pub const RECENT_REQUESTS: usize = 64;

struct Shared {
    config: Mutex<FakeConfig>,
    stats: Mutex<FakeStats>,
    slots: Mutex<Option<Arc<Semaphore>>>,
}

/// The fake server's state; clone it to keep a handle for assertions.
#[derive(Clone)]
pub struct FakeState(Arc<Shared>);

impl Default for FakeState {
    fn default() -> Self {
        FakeState::new(FakeConfig::default())
    }
}

impl FakeState {
    pub fn new(config: FakeConfig) -> Self {
        let slots = config.slots.map(|n| Arc::new(Semaphore::new(n.max(1))));
        FakeState(Arc::new(Shared {
            config: Mutex::new(config),
            stats: Mutex::new(FakeStats::default()),
            slots: Mutex::new(slots),
        }))
    }

    pub fn set_config(&self, config: FakeConfig) {
        *lock(&self.0.slots) = config.slots.map(|n| Arc::new(Semaphore::new(n.max(1))));
        *lock(&self.0.config) = config;
    }

    /// Changes the behaviour of one model name.
    pub fn set_model(&self, model: &str, behavior: FakeBehavior) {
        lock(&self.0.config)
            .per_model
            .insert(model.to_string(), behavior);
    }

    /// A snapshot of the counters, with `busy_slot_us` brought up to now.
    pub fn stats(&self) -> FakeStats {
        let mut s = lock(&self.0.stats);
        s.settle_busy(Instant::now());
        s.clone()
    }

    pub fn reset_stats(&self) {
        let mut s = lock(&self.0.stats);
        let (in_flight, busy) = (s.in_flight, s.busy);
        *s = FakeStats {
            in_flight,
            max_in_flight: in_flight,
            busy,
            busy_since: Some(Instant::now()),
            ..FakeStats::default()
        };
    }

    pub(super) fn behavior(&self, model: &str) -> FakeBehavior {
        let cfg = lock(&self.0.config);
        cfg.per_model.get(model).unwrap_or(&cfg.default).clone()
    }

    pub(super) fn record(&self, seen: SeenRequest) {
        let mut s = lock(&self.0.stats);
        s.requests += 1;
        *s.by_model.entry(seen.model.clone()).or_default() += 1;
        if s.recent.len() == RECENT_REQUESTS {
            s.recent.pop_front();
        }
        s.recent.push_back(seen);
    }

    pub(super) fn enter(&self) -> InFlight {
        let mut s = lock(&self.0.stats);
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight {
            state: self.clone(),
            completed: false,
            slot: None,
            busy: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one request in flight until dropped; once [`InFlight::serve`] ran it also holds
/// the request's slot (so a streamed answer keeps its slot until the stream ends) and
/// counts it as busy.
pub(super) struct InFlight {
    state: FakeState,
    completed: bool,
    slot: Option<OwnedSemaphorePermit>,
    busy: bool,
}

impl InFlight {
    /// The whole response was sent: counted in `completed` when the guard drops.
    pub(super) fn finish(&mut self) {
        self.completed = true;
    }

    /// Waits for a server slot (when `slots` is set), then counts the request as busy.
    pub(super) async fn serve(&mut self) {
        let slots = lock(&self.state.0.slots).clone();
        if let Some(sem) = slots {
            self.slot = sem.acquire_owned().await.ok();
        }
        let mut s = lock(&self.state.0.stats);
        s.settle_busy(Instant::now());
        s.busy += 1;
        self.busy = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.state.0.stats);
        s.in_flight = s.in_flight.saturating_sub(1);
        if self.completed {
            s.completed += 1;
        }
        if self.busy {
            s.settle_busy(Instant::now());
            s.busy = s.busy.saturating_sub(1);
        }
    }
}
