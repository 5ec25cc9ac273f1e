//! Routes a turn to a model, runs it under the model's limiter and time budget, and
//! falls back to the configured `fallback` model when that can still help.
//!
//! Invariants:
//! - A turn never runs past `arrived + timeout_ms` of its routed model: the queue wait,
//!   the call and any fallback all share that one deadline.
//! - All its waits for model slots (primary and fallback), together with the wait behind
//!   its conversation's earlier turns (`Turn::waited_in_line`), take at most
//!   `limits.queue.max_wait_ms` ([`WaitBudget`]).
//! - A failed attempt gives its model's slot back before the fallback is asked.
//! - A fallback is tried only for failover-eligible errors (timeouts, connect errors, 429,
//!   5xx, broken or empty streams), never twice for the same model, and only when
//!   [`fallback_deadline`] says the time left can still produce an answer; the fallback's
//!   own `timeout_ms` counts from its own start.
//! - A model with several replicas ([`super::replicas`]): a turn holds one slot of the
//!   model (its limiter's limit is the model's, capped by the sum of the replicas' own
//!   limits) and, inside it, one slot of one replica. A request that fails with a
//!   failover-eligible error *before its first token* is sent again to another replica of
//!   the same model, each replica at most once per turn, within the same turn deadline and
//!   only while [`fallback_deadline`] says enough of it is left; after a first token the
//!   text already shown cannot be taken back, so there is no retry.
//! - With `state.backend: redis` a turn first takes one global lease of the model
//!   ([`super::global_limit`]: at most the model's limit over all bot replicas, the line
//!   round-robin across conversations), then its local slot; both waits share the wait
//!   budget. A lease lost while the request runs cancels the request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{fallback_deadline, last_useful_send, worth_sending, PhaseBudgets};
use super::client::{ModelClient, ProbeError};
use super::error::{ModelError, TimeoutPhase};
use super::global_limit::{GlobalLimit, Lease};
use super::limiter::{Busy, Limiter, Permit};
use super::replicas::{replica_at_fault, LocalSlots, ReplicaSet};
use super::stats::ModelStats;
use super::types::{prompt_chars, ChatMessage, Turn, TurnOutcome};
use super::wait_budget::WaitBudget;
use crate::config::{Config, ModelConfig, RoutingConfig};
use crate::state::redis::RedisState;
use crate::status::{ModelReport, ReplicaReport};

struct Entry {
    /// One client per replica, in config order. `Err` holds why the HTTP client could
    /// not be built (reported on every turn sent there).
    clients: Vec<Result<ModelClient, ModelError>>,
    /// The replicas' URLs (may hold passwords: redact before showing).
    base_urls: Vec<String>,
    replicas: ReplicaSet,
    budgets: PhaseBudgets,
    fallback: Option<String>,
    limiter: Arc<Limiter>,
    /// The limit shared by all replicas (`state.backend: redis`), taken before `limiter`.
    global: Option<Arc<GlobalLimit>>,
    stats: ModelStats,
}

/// A turn's right to call a model: its local slot and, with Redis, its global lease.
struct Slot {
    global: Option<Lease>,
    _local: Permit,
}

struct Inner {
    models: BTreeMap<String, Entry>,
    /// Wakes global-slot waiters on releases published by any replica.
    global_listener: Option<tokio::task::JoinHandle<()>>,
    routing: RoutingConfig,
    max_wait: Duration,
    /// `limits.queue.max_waiting`: turns of this replica waiting for one model's slot.
    max_waiting: usize,
    prompt_budget_chars: usize,
    /// `reply.max_answer_chars`: every answer is cut there while streaming.
    max_answer_chars: usize,
}

/// What the caller of [`ModelRouter::answer_with`] provides around a turn.
pub trait TurnHooks {
    /// The prompt, built once a slot is granted (so it sees the previous turn's answer).
    fn prepare(&mut self) -> Vec<ChatMessage>;
    /// The full text so far, after each streamed chunk.
    fn progress(&mut self, full_text: &str);
    /// The final answer, called while the slot is still held.
    fn answered(&mut self, text: &str);
}

/// Answers turns with the configured models. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ModelRouter {
    inner: Arc<Inner>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.global_listener {
            task.abort();
        }
    }
}

impl ModelRouter {
    /// The router of a single daemon (`state.backend: local`).
    pub fn new(config: &Config) -> ModelRouter {
        ModelRouter::with_state(config, None)
    }

    /// The router; with `redis` each model's limit is also one global semaphore shared by
    /// every replica (see [`super::global_limit`]). Call inside a tokio runtime.
    pub(crate) fn with_state(config: &Config, redis: Option<RedisState>) -> ModelRouter {
        let queue = &config.limits.queue;
        let models: BTreeMap<String, Entry> = config
            .models
            .iter()
            .map(|(name, cfg)| {
                let limit = config
                    .limits
                    .max_concurrency_per_model
                    .get(name)
                    .copied()
                    .unwrap_or(1);
                let mut entry = Entry::new(cfg, limit, queue.max_waiting);
                // The model's limit as the local limiter has it (capped by the replicas' sum).
                let limit = entry.limiter.snapshot().limit;
                entry.global = redis
                    .as_ref()
                    .map(|r| GlobalLimit::new(r.clone(), name, limit));
                (name.clone(), entry)
            })
            .collect();
        let global_listener = redis.and_then(|r| {
            let limits = models.values().filter_map(|e| e.global.clone()).collect();
            super::global_limit::spawn_listener(r, limits)
        });
        ModelRouter {
            inner: Arc::new(Inner {
                models,
                global_listener,
                routing: config.routing.clone(),
                max_wait: Duration::from_millis(queue.max_wait_ms),
                max_waiting: queue.max_waiting,
                prompt_budget_chars: config.prompt.max_chars,
                max_answer_chars: config.reply.max_answer_chars,
            }),
        }
    }

    /// Uses `key` for `model`'s requests from now on (a key rotated by a config reload).
    /// False when no such model runs (or its client could not be built).
    pub(crate) fn set_api_key(&self, model: &str, key: Option<crate::config::Secret>) -> bool {
        let Some(entry) = self.inner.models.get(model) else {
            return false;
        };
        let mut set = false;
        for client in entry.clients.iter().flatten() {
            client.set_api_key(key.clone());
            set = true;
        }
        set
    }

    /// The config name of the model a turn goes to: the first matching rule, else the default.
    pub fn route(&self, turn: &Turn) -> &str {
        let routing = &self.inner.routing;
        routing
            .rules
            .iter()
            .find(|r| {
                field_matches(r.conversation_id.as_ref(), Some(&turn.conversation_id))
                    && field_matches(r.user_id.as_ref(), turn.user_id.as_ref())
                    && field_matches(r.conversation_type.as_ref(), Some(&turn.kind))
            })
            .map(|r| r.model.as_str())
            .filter(|m| self.inner.models.contains_key(*m))
            .unwrap_or(&routing.defaults.model)
    }

    /// How long `turn` may still wait before its model call and have that call worth
    /// sending (`arrived + timeout_ms` of its routed model, less the send floor of
    /// [`last_useful_send`]); `None` when the routed model is unknown (the turn then fails
    /// at once).
    pub(crate) fn time_to_start(&self, turn: &Turn) -> Option<Duration> {
        let model = self.inner.models.get(self.route(turn))?;
        let deadline = Instant::from_std(turn.arrived) + model.budgets.total;
        Some(last_useful_send(deadline, &model.budgets).saturating_duration_since(Instant::now()))
    }

    /// `limits.queue.max_wait_ms` as the daemon started with it (a reload changes it only
    /// at the next start, like every `limits` key): the one bound on all of a turn's
    /// waits, in its conversation's line and for a model slot.
    pub(crate) fn max_wait(&self) -> Duration {
        self.inner.max_wait
    }

    /// Answers one turn, asking `hooks` for the messages only once a slot is granted and
    /// telling it the answer before the slot is released. Because the caller lets one turn
    /// of a conversation at a time reach here, the next turn of the same conversation then
    /// builds its prompt from a history that already holds this answer.
    pub async fn answer_with(
        &self,
        turn: &Turn,
        hooks: &mut (dyn TurnHooks + Send),
    ) -> TurnOutcome {
        let primary = self.route(turn).to_string();
        let Some(first) = self.inner.models.get(&primary) else {
            return no_model(&primary);
        };
        let deadline = Instant::from_std(turn.arrived) + first.budgets.total;
        let mut wait = WaitBudget::new(self.inner.max_wait, turn.waited_in_line);
        let Some(permit) = self
            .wait_for_slot(first, &turn.conversation_id, deadline, &mut wait)
            .await
        else {
            return TurnOutcome::Busy;
        };
        let messages = hooks.prepare();
        let mut attempt = Attempt {
            model: primary.clone(),
            entry: first,
            permit: Some(permit),
            // The primary runs to the turn's deadline; a fallback to its own (never later).
            deadline,
        };
        let mut tried = vec![primary.clone()];
        loop {
            let error = match attempt
                .run(&messages, self.inner.max_answer_chars, hooks, &mut wait)
                .await
            {
                Ok(text) => {
                    hooks.answered(&text);
                    drop(attempt.permit);
                    let fell_back = attempt.model != primary;
                    return TurnOutcome::Answer {
                        text,
                        model: attempt.model,
                        fell_back,
                    };
                }
                Err(Some(e)) => e,
                Err(None) => {
                    // No replica slot came free within the turn's wait bound.
                    attempt.entry.stats.busy();
                    return TurnOutcome::Busy;
                }
            };
            // The failed model's slot goes back at once; the conversation keeps its place
            // in line through the caller's turn order, not through a slot.
            let failed = attempt.give_up(&error);
            let next = self.fallback(&attempt, &error, &tried, deadline, turn, &mut wait);
            attempt = match next.await {
                Ok(next) => next,
                Err(None) => return failed,
                Err(Some(note)) => return with_note(failed, &note),
            };
            tried.push(attempt.model.clone());
        }
    }

    /// The fallback attempt after `failed` ended with `error`: when one is configured, not
    /// tried yet, the error is failover-eligible, enough of the turn's time is left and a
    /// slot comes free within the turn's wait bound. `Err` holds why not (`None`: nothing
    /// to add to the failure).
    async fn fallback<'a>(
        &'a self,
        failed: &Attempt<'_>,
        error: &ModelError,
        tried: &[String],
        deadline: Instant,
        turn: &Turn,
        wait: &mut WaitBudget,
    ) -> Result<Attempt<'a>, Option<String>> {
        let next = match &failed.entry.fallback {
            Some(next) if error.failover_eligible() && !tried.contains(next) => next,
            _ => return Err(None),
        };
        let next_entry = self.inner.models.get(next).ok_or(None)?;
        let primary = self.inner.models.get(&tried[0]).ok_or(None)?;
        let current = &failed.model;
        let Some(fallback_deadline) = fallback_deadline(
            Instant::now(),
            deadline,
            &primary.budgets,
            &next_entry.budgets,
        ) else {
            tracing::info!(model = %current, fallback = %next, "not enough time left for the fallback model");
            return Err(None);
        };
        failed.entry.stats.fell_back();
        tracing::info!(model = %current, fallback = %next, error = %error, "trying the fallback model");
        let permit = self
            .wait_for_slot(next_entry, &turn.conversation_id, fallback_deadline, wait)
            .await
            .ok_or_else(|| Some(format!("fallback {next} busy")))?;
        Ok(Attempt {
            model: next.clone(),
            entry: next_entry,
            permit: Some(permit),
            deadline: fallback_deadline,
        })
    }

    /// Waits for a slot (with Redis the global lease first, then the local slot, which
    /// is then free at once; see [`super::global_limit`]) no longer than what is left of
    /// the turn's wait bound nor its deadline.
    async fn wait_for_slot(
        &self,
        entry: &Entry,
        conversation: &str,
        deadline: Instant,
        wait: &mut WaitBudget,
    ) -> Option<Slot> {
        let waiting_since = Instant::now();
        let global = match &entry.global {
            None => None,
            Some(g) if g.waiting_here() >= self.inner.max_waiting => {
                return self.busy(entry, Busy::QueueFull)
            }
            Some(g) => match wait
                .spend(g.acquire(conversation, deadline))
                .await
                .flatten()
            {
                Some(lease) => Some(lease),
                None => return self.busy(entry, Busy::WaitExpired),
            },
        };
        let acquired = wait.spend(entry.limiter.acquire(conversation, deadline));
        let local = match acquired.await.unwrap_or(Err(Busy::WaitExpired)) {
            Ok(p) => p,
            // The lease goes back with `global` here.
            Err(why) => return self.busy(entry, why),
        };
        crate::ops::metrics::observed().queue_waited(waiting_since.elapsed());
        Some(Slot {
            global,
            _local: local,
        })
    }

    fn busy(&self, entry: &Entry, why: Busy) -> Option<Slot> {
        entry.stats.busy();
        tracing::info!(?why, "model busy");
        None
    }

    /// One report per configured model, in name order, each with its replicas.
    pub fn reports(&self) -> Vec<ModelReport> {
        self.inner
            .models
            .iter()
            .map(|(name, e)| {
                let mut report =
                    e.stats
                        .report(name, e.limiter.snapshot(), self.inner.prompt_budget_chars);
                if let Some(g) = &e.global {
                    report.global_in_flight = Some(g.in_flight());
                    report.global_limit_conflict = g.conflict();
                    report.queued += g.waiting_here();
                }
                report.replicas = e
                    .replicas
                    .figures()
                    .into_iter()
                    .zip(&e.base_urls)
                    .map(|(f, url)| ReplicaReport {
                        base_url: crate::redact_url::redact_url(url).into_owned(),
                        limit: f.limit,
                        in_flight: f.in_flight,
                        state: f.state.to_string(),
                        failures: f.failures,
                        failures_in_a_row: f.failures_in_a_row,
                        served: f.served,
                    })
                    .collect();
                report
            })
            .collect()
    }

    /// Probes every replica of every model concurrently (its health URL): latency in ms,
    /// or why it failed, with what the turns saw there. A probe never ends a cooldown:
    /// only a successful chat does (a runtime may answer `/models` and fail every chat).
    pub async fn check(&self, timeout: Duration) -> Vec<ReplicaProbe> {
        let probes = self.inner.models.iter().flat_map(|(name, e)| {
            e.clients
                .iter()
                .enumerate()
                .map(move |(i, client)| async move {
                    let result = match client {
                        Ok(c) => c.probe(timeout).await,
                        Err(why) => Err(why.clone().into()),
                    };
                    let seen = &e.replicas.figures()[i];
                    ReplicaProbe {
                        model: name.clone(),
                        replica: (e.clients.len() > 1).then_some(i),
                        base_url: e.base_urls[i].clone(),
                        result,
                        chat_failures_in_a_row: seen.failures_in_a_row,
                        cooling_down: seen.state == "cooling_down",
                    }
                })
        });
        futures_util::future::join_all(probes).await
    }
}

/// One replica's health probe.
pub struct ReplicaProbe {
    /// The model's config name.
    pub model: String,
    /// Its index under `models.NAME.replicas`; `None` for a model with one `base_url`.
    pub replica: Option<usize>,
    /// The probed runtime's URL (may hold a password: redact before showing).
    pub base_url: String,
    /// The latency in ms, or why it failed.
    pub result: Result<u64, ProbeError>,
    /// Chat requests that failed there in a row, through the replica's fault (0 once
    /// one succeeds).
    pub chat_failures_in_a_row: u32,
    /// The replica gets no traffic for now ([`super::replicas`] cooldown).
    pub cooling_down: bool,
}

impl Entry {
    /// `limit` is the model's; each replica's own limit is at most that (default: that),
    /// and the model's slots are capped by the replicas' sum, so a turn holding a model
    /// slot always finds a replica with room once the healthy ones have some.
    fn new(cfg: &ModelConfig, limit: usize, max_waiting: usize) -> Entry {
        let endpoints = cfg.endpoints();
        let limits: Vec<usize> = endpoints
            .iter()
            .map(|r| r.max_concurrency.unwrap_or(limit).min(limit))
            .collect();
        let replicas = ReplicaSet::new(limits, Arc::new(LocalSlots::new(endpoints.len())));
        Entry {
            clients: endpoints
                .iter()
                .map(|r| ModelClient::new(cfg, &r.base_url))
                .collect(),
            base_urls: endpoints.into_iter().map(|r| r.base_url).collect(),
            budgets: PhaseBudgets::from_config(cfg),
            fallback: cfg.fallback.clone(),
            limiter: Limiter::new(limit.min(replicas.total_limit()), max_waiting),
            replicas,
            global: None,
            stats: ModelStats::default(),
        }
    }

    /// One call to replica `replica` with stats; errors are recorded as classes, never text.
    async fn call(
        &self,
        model: &str,
        replica: usize,
        messages: &[ChatMessage],
        deadline: Instant,
        max_answer_chars: usize,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, ModelError> {
        let Some(client) = self.clients.get(replica) else {
            return Err(ModelError::Connect(format!("no replica {replica}")));
        };
        let client = match client {
            Ok(c) => c,
            Err(why) => {
                self.stats.failed(why.to_string(), false);
                return Err(why.clone());
            }
        };
        self.stats.prompt_sent(prompt_chars(messages));
        let sent = Instant::now();
        let mut first_token = Some(sent);
        let mut progress = |full: &str| {
            if let Some(t) = first_token.take() {
                crate::ops::metrics::observed().first_token(model, t.elapsed());
            }
            on_progress(full)
        };
        match client
            .complete(messages, deadline, max_answer_chars, &mut progress)
            .await
        {
            Ok(c) => {
                self.stats.served(sent.elapsed().as_millis() as u64);
                if c.cut {
                    tracing::info!(
                        max_answer_chars,
                        "answer cut at reply.max_answer_chars; model stream closed"
                    );
                }
                Ok(c.text)
            }
            Err(e) => {
                self.stats.failed(e.to_string(), e.is_timeout());
                Err(e)
            }
        }
    }
}

/// One model asked for one turn, holding a slot of that model.
struct Attempt<'a> {
    /// The model's config name.
    model: String,
    entry: &'a Entry,
    /// `None` once the attempt failed and gave its slot back.
    permit: Option<Slot>,
    deadline: Instant,
}

impl Attempt<'_> {
    /// Asks the model at one of its replicas; streamed text goes to `hooks`. A failure
    /// before the first token is retried at another replica (see the module invariants).
    /// `Err(None)`: no replica slot came free within `wait` and the deadline.
    async fn run(
        &self,
        messages: &[ChatMessage],
        max_answer_chars: usize,
        hooks: &mut (dyn TurnHooks + Send),
        wait: &mut WaitBudget,
    ) -> Result<String, Option<ModelError>> {
        let on_replicas = self.run_on_replicas(messages, max_answer_chars, hooks, wait);
        match self.permit.as_ref().and_then(|s| s.global.as_ref()) {
            None => on_replicas.await,
            // A lost global lease cancels the request: the model's global limit holds.
            Some(lease) => tokio::select! {
                r = on_replicas => r,
                _ = lease.lost() => {
                    self.entry.stats.failed(ModelError::LeaseLost.to_string(), false);
                    Err(Some(ModelError::LeaseLost))
                }
            },
        }
    }

    /// [`Attempt::run`] without the global lease's watch.
    async fn run_on_replicas(
        &self,
        messages: &[ChatMessage],
        max_answer_chars: usize,
        hooks: &mut (dyn TurnHooks + Send),
        wait: &mut WaitBudget,
    ) -> Result<String, Option<ModelError>> {
        let (model, deadline, entry) = (&self.model, self.deadline, self.entry);
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let picked = wait.spend(entry.replicas.pick(&tried, deadline)).await;
            let Some(lease) = picked.flatten() else {
                return Err(last_error);
            };
            let replica = lease.index();
            if !worth_sending(Instant::now(), deadline, &entry.budgets) {
                // Not the replica's fault, and nothing was asked of it.
                let error = ModelError::Timeout(TimeoutPhase::Total);
                entry.stats.failed(error.to_string(), true);
                tracing::info!(model = %model, "too little of the turn left to send it");
                return Err(Some(error));
            }
            tried.push(replica);
            let mut got_first_token = false;
            let mut on_progress = |full: &str| {
                got_first_token = true;
                hooks.progress(full)
            };
            let result = entry
                .call(
                    model,
                    replica,
                    messages,
                    deadline,
                    max_answer_chars,
                    &mut on_progress,
                )
                .await;
            // Health is recorded while the slot is still held: the next turn to take it
            // already sees this outcome (so a cooling replica gets no extra request).
            let error = match result {
                Ok(text) => {
                    entry.replicas.succeeded(replica);
                    return Ok(text);
                }
                Err(e) => e,
            };
            let at_fault = replica_at_fault(&error);
            if at_fault {
                entry.replicas.failed(replica);
            }
            let was_cooling = lease.was_cooling();
            drop(lease);
            let time_left =
                fallback_deadline(Instant::now(), deadline, &entry.budgets, &entry.budgets)
                    .is_some();
            // With one replica nothing changes: `tried` already holds every replica.
            let retry = !got_first_token
                && at_fault
                && !was_cooling
                && tried.len() < entry.replicas.len()
                && time_left;
            if !retry {
                return Err(Some(error));
            }
            entry.stats.retried_on_another_replica();
            tracing::info!(model = %model, replica, error = %error, "trying another replica of the model");
            last_error = Some(error);
        }
    }

    /// Gives the model's slot back; the failure to report if nothing else answers.
    fn give_up(&mut self, error: &ModelError) -> TurnOutcome {
        self.permit = None;
        TurnOutcome::Failed {
            reason: format!("{}: {error}", self.model),
            timed_out: error.is_timeout(),
            unreachable: error.is_unreachable(),
        }
    }
}

/// `failed` with `note` added to its reason.
fn with_note(failed: TurnOutcome, note: &str) -> TurnOutcome {
    match failed {
        TurnOutcome::Failed {
            reason,
            timed_out,
            unreachable,
        } => TurnOutcome::Failed {
            reason: format!("{reason}; {note}"),
            timed_out,
            unreachable,
        },
        other => other,
    }
}

/// The outcome for a routing rule or fallback naming no configured model.
fn no_model(name: &str) -> TurnOutcome {
    TurnOutcome::Failed {
        reason: format!("no model named {name:?}"),
        timed_out: false,
        unreachable: false,
    }
}

/// A rule field matches when unset or equal to the turn's value.
fn field_matches<T: PartialEq>(rule: Option<&T>, value: Option<&T>) -> bool {
    match rule {
        None => true,
        Some(r) => value == Some(r),
    }
}
