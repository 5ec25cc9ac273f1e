//! Routes a turn to a model, runs it under the model's limiter and time budget, and
//! falls back to the configured `fallback` model when that can still help.
//!
//! Invariants:
//! - A turn never runs past `arrived + timeout_ms` of its routed model: the queue wait,
//!   the call and any fallback all share that one deadline.
//! - A fallback is tried only for failover-eligible errors (timeouts, connect errors, 429,
//!   5xx, broken or empty streams), never twice for the same model, and only when
//!   [`fallback_deadline`] says the time left can still produce an answer; the fallback's
//!   own `timeout_ms` counts from its own start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{fallback_deadline, PhaseBudgets};
use super::client::{ModelClient, ProbeError};
use super::error::ModelError;
use super::limiter::Limiter;
use super::stats::ModelStats;
use super::types::{prompt_chars, ChatMessage, Turn, TurnOutcome};
use crate::config::{Config, ModelConfig, RoutingConfig};
use crate::status::ModelReport;

struct Entry {
    /// `Err` holds why the HTTP client could not be built (reported on every turn).
    client: Result<ModelClient, ModelError>,
    budgets: PhaseBudgets,
    fallback: Option<String>,
    limiter: Arc<Limiter>,
    stats: ModelStats,
}

struct Inner {
    models: BTreeMap<String, Entry>,
    routing: RoutingConfig,
    max_wait: Duration,
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

impl ModelRouter {
    pub fn new(config: &Config) -> ModelRouter {
        let queue = &config.limits.queue;
        let models = config
            .models
            .iter()
            .map(|(name, cfg)| {
                let limit = config
                    .limits
                    .max_concurrency_per_model
                    .get(name)
                    .copied()
                    .unwrap_or(1);
                (name.clone(), Entry::new(cfg, limit, queue.max_waiting))
            })
            .collect();
        ModelRouter {
            inner: Arc::new(Inner {
                models,
                routing: config.routing.clone(),
                max_wait: Duration::from_millis(queue.max_wait_ms),
                prompt_budget_chars: config.prompt.max_chars,
                max_answer_chars: config.reply.max_answer_chars,
            }),
        }
    }

    /// Uses `key` for `model`'s requests from now on (a key rotated by a config reload).
    /// False when no such model runs (or its client could not be built).
    pub(crate) fn set_api_key(&self, model: &str, key: Option<crate::config::Secret>) -> bool {
        match self.inner.models.get(model).map(|e| &e.client) {
            Some(Ok(client)) => {
                client.set_api_key(key);
                true
            }
            _ => false,
        }
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

    /// Answers one turn with the messages it carries. `on_progress` gets the full text so
    /// far after each streamed chunk; after a fallback it starts again from the fallback's
    /// first chunk.
    pub async fn answer(
        &self,
        turn: Turn,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> TurnOutcome {
        struct Fixed<'a> {
            messages: Option<Vec<ChatMessage>>,
            on_progress: &'a mut (dyn FnMut(&str) + Send),
        }
        impl TurnHooks for Fixed<'_> {
            fn prepare(&mut self) -> Vec<ChatMessage> {
                self.messages.take().unwrap_or_default()
            }
            fn progress(&mut self, full_text: &str) {
                (self.on_progress)(full_text)
            }
            fn answered(&mut self, _text: &str) {}
        }
        let mut hooks = Fixed {
            messages: Some(turn.messages.clone()),
            on_progress,
        };
        self.answer_with(&turn, &mut hooks).await
    }

    /// Answers one turn, asking `hooks` for the messages only once a slot is granted and
    /// telling it the answer before the slot is released. Because a lane runs one turn at
    /// a time, the next turn of the same conversation then builds its prompt from a
    /// history that already holds this answer. `turn.messages` is ignored.
    pub async fn answer_with(
        &self,
        turn: &Turn,
        hooks: &mut (dyn TurnHooks + Send),
    ) -> TurnOutcome {
        let primary = self.route(turn).to_string();
        let Some(first) = self.inner.models.get(&primary) else {
            return TurnOutcome::Failed {
                reason: format!("no model named {primary:?}"),
                timed_out: false,
            };
        };
        let started = Instant::from_std(turn.arrived);
        let deadline = started + first.budgets.total;
        let Some(mut permit) = self.wait_for_slot(first, &turn.lane, deadline).await else {
            return TurnOutcome::Busy;
        };
        let messages = hooks.prepare();
        let mut on_progress = |full: &str| hooks.progress(full);
        let mut current = primary.clone();
        let mut tried = vec![primary.clone()];
        // Lanes of models already tried stay closed until the turn ends: a fallback gives
        // back the failed model's slot, never the conversation's place in line.
        let mut holds = Vec::new();
        // The primary runs to the turn's deadline; a fallback to its own (never later).
        let mut call_deadline = deadline;
        loop {
            let Some(entry) = self.inner.models.get(&current) else {
                return TurnOutcome::Failed {
                    reason: format!("no model named {current:?}"),
                    timed_out: false,
                };
            };
            let result = entry
                .call(
                    &current,
                    &messages,
                    call_deadline,
                    self.inner.max_answer_chars,
                    &mut on_progress,
                )
                .await;
            let error = match result {
                Ok(text) => {
                    hooks.answered(&text);
                    drop(permit);
                    let fell_back = current != primary;
                    return TurnOutcome::Answer {
                        text,
                        model: current,
                        fell_back,
                    };
                }
                Err(e) => e,
            };
            holds.push(permit.into_lane_hold());
            let failed = TurnOutcome::Failed {
                reason: format!("{current}: {error}"),
                timed_out: error.is_timeout(),
            };
            let next = match &entry.fallback {
                Some(next) if error.failover_eligible() && !tried.contains(next) => next.clone(),
                _ => return failed,
            };
            let Some(next_entry) = self.inner.models.get(&next) else {
                return failed;
            };
            let Some(fallback_deadline) = fallback_deadline(
                Instant::now(),
                deadline,
                &first.budgets,
                &next_entry.budgets,
            ) else {
                tracing::info!(model = %current, fallback = %next, "not enough time left for the fallback model");
                return failed;
            };
            entry.stats.fell_back();
            tracing::info!(model = %current, fallback = %next, error = %error, "trying the fallback model");
            permit = match self
                .wait_for_slot(next_entry, &turn.lane, fallback_deadline)
                .await
            {
                Some(p) => p,
                None => {
                    let TurnOutcome::Failed { reason, timed_out } = failed else {
                        return failed;
                    };
                    return TurnOutcome::Failed {
                        reason: format!("{reason}; fallback {next} busy"),
                        timed_out,
                    };
                }
            };
            tried.push(next.clone());
            current = next;
            call_deadline = fallback_deadline;
        }
    }

    /// Waits for a slot no longer than `queue.max_wait_ms` nor the turn's deadline.
    async fn wait_for_slot(
        &self,
        entry: &Entry,
        lane: &str,
        deadline: Instant,
    ) -> Option<super::limiter::Permit> {
        let waiting_since = Instant::now();
        let wait_until = deadline.min(waiting_since + self.inner.max_wait);
        match entry.limiter.acquire(lane, wait_until).await {
            Ok(p) => {
                crate::ops::metrics::observed().queue_waited(waiting_since.elapsed());
                Some(p)
            }
            Err(why) => {
                entry.stats.busy();
                tracing::info!(?why, "model busy");
                None
            }
        }
    }

    /// One report per configured model, in name order.
    pub fn reports(&self) -> Vec<ModelReport> {
        self.inner
            .models
            .iter()
            .map(|(name, e)| {
                e.stats
                    .report(name, e.limiter.snapshot(), self.inner.prompt_budget_chars)
            })
            .collect()
    }

    /// Probes every model's health URL concurrently: latency in ms, or why it failed.
    pub async fn check(&self, timeout: Duration) -> Vec<(String, Result<u64, ProbeError>)> {
        let probes = self.inner.models.iter().map(|(name, e)| async move {
            let result = match &e.client {
                Ok(c) => c.probe(timeout).await,
                Err(why) => Err(why.clone().into()),
            };
            (name.clone(), result)
        });
        futures_util::future::join_all(probes).await
    }
}

impl Entry {
    fn new(cfg: &ModelConfig, limit: usize, max_waiting: usize) -> Entry {
        Entry {
            client: ModelClient::new(cfg),
            budgets: PhaseBudgets::from_config(cfg),
            fallback: cfg.fallback.clone(),
            limiter: Limiter::new(limit, max_waiting),
            stats: ModelStats::default(),
        }
    }

    /// One call with stats; errors are recorded as classes, never text.
    async fn call(
        &self,
        model: &str,
        messages: &[ChatMessage],
        deadline: Instant,
        max_answer_chars: usize,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, ModelError> {
        let client = match &self.client {
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

/// A rule field matches when unset or equal to the turn's value.
fn field_matches<T: PartialEq>(rule: Option<&T>, value: Option<&T>) -> bool {
    match rule {
        None => true,
        Some(r) => value == Some(r),
    }
}
