//! The bot workload: DingTalk channel in, local model out.
//!
//! Data path: channel (dedupe) -> durable journal (group commit) -> ACK -> access policy ->
//! memory and prompt -> model router (limits, fair queue, budget, fallback) -> reply
//! (text/markdown or AI card) -> memory update -> "answered" record in the journal. A reply
//! DingTalk does not take is retried in the background (`redelivery`); open AI cards are
//! recorded on disk (`open_cards`) until finalized, and those a crash left open are failed
//! at start (`cards`).

mod busy;
mod cards;
mod chat_commands;
mod conversations;
mod health;
#[cfg(test)]
mod http_clients;
mod inflight;
mod intake;
mod journal;
mod line_cap;
mod open_cards;
mod order;
mod pipeline;
mod redelivery;
mod redis_inbox;
mod redis_memory;
mod reload;
mod seen;

pub(crate) use health::{preflight_checks, CheckProgress};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::daemon::workload::{WorkError, Workload};
use crate::dingtalk::channel::ChannelTuning;
use crate::dingtalk::{Channel, ChannelError, Inbound};
use crate::ipc::proto::{ErrorKind, HealthReport, SeenConversation, SendOutcome};
use crate::model::ModelRouter;
use crate::paths::DaemonPaths;
use crate::status::DaemonReport;
use futures_util::future::BoxFuture;

/// The callback replay record in the state folder (see `dingtalk::replay`).
const CALLBACK_REPLAY_FILE: &str = "callback-replay";

use crate::state::redis::RedisState;
use conversations::Conversations;
use inflight::InFlight;
use intake::{JournalSink, RedisSink};
use journal::Journal;
use open_cards::OpenCards;
use order::TurnOrder;
use redis_inbox::RedisInbox;
use redis_memory::RedisMemory;

pub(crate) struct Shared {
    /// The live config; SIGHUP swaps it (reply texts, policy, access, memory, prompt).
    config: RwLock<Arc<Config>>,
    config_path: PathBuf,
    channel: Option<Channel>,
    router: ModelRouter,
    conversations: Conversations,
    journal: Arc<Journal>,
    inflight: InFlight,
    /// Arrival order of each conversation's turns.
    order: Arc<TurnOrder>,
    /// How many turns of each conversation wait in its line (`limits.queue.max_waiting`).
    line_cap: Arc<line_cap::LineCap>,
    /// False once shutdown began: new messages stay in the journal for the next run.
    accepting: AtomicBool,
    /// AI cards opened and not finalized yet (durable).
    open_cards: Option<Arc<OpenCards>>,
    /// Replies being retried, and how retries ended.
    delivery: redelivery::DeliveryStats,
    /// Busy replies by cause.
    busy: busy::BusyReplies,
    /// Conversations messages came from, for `clawdbot conversations`.
    seen: seen::SeenConversations,
    /// The Redis connection (`state.backend: redis`); `None` with the local backend.
    redis: Option<RedisState>,
    /// Replicas alive at the last heartbeat (0 while Redis does not answer).
    alive_replicas: Arc<AtomicUsize>,
    /// The inbox shared by the replicas (`state.backend: redis`).
    inbox: Option<Arc<RedisInbox>>,
    /// Conversation memory shared by the replicas (`state.backend: redis`).
    shared_memory: Option<RedisMemory>,
}

impl Shared {
    /// The backend, and with Redis this replica's view of it (heartbeat figures).
    fn state_report(&self) -> crate::status::StateReport {
        let Some(redis) = &self.redis else {
            return crate::status::StateReport {
                backend: "local".into(),
                ..Default::default()
            };
        };
        let alive = self.alive_replicas.load(Ordering::Relaxed) as u64;
        let intake_error = self.inbox.as_ref().and_then(|i| i.intake_failing());
        crate::status::StateReport {
            backend: "redis".into(),
            replica_id: Some(redis.replica_id().to_string()),
            redis_server: Some(redis.server().to_string()),
            redis_ok: Some(alive > 0 && intake_error.is_none()),
            intake_error,
            alive_replicas: Some(alive),
        }
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) struct Bot {
    shared: Arc<Shared>,
}

/// Why the bot could not start; each names the folder, file or config key involved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BotStartError {
    #[error(transparent)]
    StateDir(crate::paths::PathError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Channel(#[from] crate::dingtalk::ChannelStartError),
    /// `state.backend: redis` and Redis cannot be reached at start.
    #[error("state.redis: {0}")]
    Redis(#[from] crate::state::redis::RedisError),
}

impl From<BotStartError> for crate::exit::CliError {
    fn from(e: BotStartError) -> Self {
        match e {
            BotStartError::StateDir(e) => e.into(),
            other => crate::exit::CliError::failure(other.to_string()),
        }
    }
}

impl Bot {
    /// Starts the channel and the dispatcher, then replays messages a previous run accepted
    /// but did not answer.
    pub(crate) async fn start(
        config: Config,
        config_path: PathBuf,
        paths: DaemonPaths,
    ) -> Result<Bot, BotStartError> {
        paths.ensure_state_dir().map_err(BotStartError::StateDir)?;
        let redis = match (&config.state.backend, &config.state.redis) {
            (crate::config::StateBackend::Redis, Some(cfg)) => {
                Some(RedisState::connect(cfg).await?)
            }
            _ => None,
        };
        // Without a journal no message could be ACKed safely: a startup error, not a
        // silent downgrade.
        let (tx, rx) = mpsc::unbounded_channel::<Inbound>();
        let opened = Journal::open(&paths.state, tx)?;
        let journal = Arc::new(opened.journal);
        let alive_replicas = Arc::new(AtomicUsize::new(0));
        let inbox = match (&redis, &config.state.redis) {
            (Some(redis), Some(cfg)) => {
                alive_replicas.store(redis.heartbeat().await?, Ordering::Relaxed);
                redis.spawn_heartbeat(alive_replicas.clone());
                let window = crate::dingtalk::ingress::DEDUPE_WINDOW;
                Some(RedisInbox::open(redis.clone(), cfg, window).await?)
            }
            _ => None,
        };
        let channel = match &config.channel {
            Some(ch) => {
                let tuning = ChannelTuning {
                    replay_file: Some(paths.state.join(CALLBACK_REPLAY_FILE)),
                    ..ChannelTuning::default()
                };
                let channel = match &inbox {
                    Some(inbox) => {
                        let sink = RedisSink(inbox.clone());
                        Channel::start_shared(ch.dingtalk.clone(), sink, tuning, redis.clone())
                            .await?
                    }
                    None => {
                        let sink = JournalSink(journal.clone());
                        Channel::start_shared(ch.dingtalk.clone(), sink, tuning, redis.clone())
                            .await?
                    }
                };
                channel.set_max_parts(config.reply.max_parts);
                Some(channel)
            }
            None => {
                tracing::warn!("no channel section in the config: the bot receives no messages");
                None
            }
        };
        let open_cards = match OpenCards::open(&paths.state) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the open-cards store; a card left by a crash stays open");
                None
            }
        };
        let shared = Arc::new(Shared {
            router: ModelRouter::with_state(&config, redis.clone()),
            conversations: Conversations::new(&config),
            line_cap: line_cap::LineCap::new(config.limits.queue.max_waiting),
            config: RwLock::new(Arc::new(config)),
            config_path,
            channel,
            journal,
            inflight: InFlight::default(),
            order: TurnOrder::new(),
            accepting: AtomicBool::new(true),
            open_cards,
            delivery: redelivery::DeliveryStats::default(),
            busy: busy::BusyReplies::default(),
            seen: seen::SeenConversations::default(),
            shared_memory: redis.clone().map(RedisMemory::new),
            redis,
            alive_replicas,
            inbox,
        });
        cards::close_left_open(&shared);
        pipeline::replay(&shared, opened.pending, opened.replies);
        tokio::spawn(pipeline::dispatch(shared.clone(), rx));
        if let Some(inbox) = &shared.inbox {
            tokio::spawn(pipeline::dispatch_shared(shared.clone(), inbox.start()));
        }
        Ok(Bot { shared })
    }
}

fn channel_error(e: ChannelError) -> WorkError {
    let kind = match e {
        // The caller named something the config does not know: not DingTalk's refusal.
        ChannelError::UnknownTarget(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Failed,
    };
    WorkError {
        kind,
        message: e.to_string(),
    }
}

impl Workload for Bot {
    fn kind(&self) -> &'static str {
        "bot"
    }

    fn fill_report(&self, report: &mut DaemonReport) {
        report.channel = self.shared.channel.as_ref().map(Channel::report);
        report.models = self.shared.router.reports();
        report.journal = Some(self.shared.journal.report());
        report.delivery = Some(self.shared.delivery.report());
        report.busy_replies = Some(self.shared.busy.report());
        report.state = Some(self.shared.state_report());
    }

    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        Some(crate::ops::readiness::ReadinessFacts {
            channel: self.shared.channel.as_ref().map(Channel::readiness),
            inbox: self.shared.inflight.readiness(),
            draining: !self.shared.accepting.load(Ordering::SeqCst),
            redis_down: self
                .shared
                .redis
                .as_ref()
                .filter(|_| self.shared.alive_replicas.load(Ordering::Relaxed) == 0)
                .map(|r| r.server().to_string()),
            redis_intake_failing: self.shared.inbox.as_ref().and_then(|i| i.intake_failing()),
        })
    }

    fn health(&self, timeout: Duration) -> BoxFuture<'_, HealthReport> {
        Box::pin(health::daemon_checks(&self.shared, timeout))
    }

    fn send(
        &self,
        to: String,
        text: String,
        markdown: bool,
    ) -> BoxFuture<'_, Result<SendOutcome, WorkError>> {
        Box::pin(async move {
            let channel = self
                .shared
                .channel
                .as_ref()
                .ok_or_else(|| WorkError::unsupported("this bot has no channel configured"))?;
            channel
                .send(&to, &text, markdown)
                .await
                .map_err(channel_error)
        })
    }

    fn conversations(&self, limit: usize) -> Result<Vec<SeenConversation>, WorkError> {
        Ok(self.shared.seen.recent(limit))
    }

    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.accepting.store(false, Ordering::SeqCst);
            let in_flight = self.shared.inflight.count();
            if !self.shared.inflight.drained(drain).await {
                tracing::warn!(
                    in_flight = self.shared.inflight.count(),
                    "drain time over; unanswered turns stay in the journal for the next start"
                );
            } else if in_flight > 0 {
                tracing::info!(in_flight, "drained in-flight turns");
            }
            if let Some(ch) = &self.shared.channel {
                ch.shutdown().await;
            }
            if let Some(inbox) = &self.shared.inbox {
                if !inbox.writes_drained(drain).await {
                    tracing::warn!("drain time over; the shared inbox's last records are left to the replicas that take the messages over");
                }
            }
            self.shared.journal.flush().await;
            if let Some(redis) = &self.shared.redis {
                if let Err(e) = redis.release_replica_id().await {
                    tracing::warn!(error = %e, "cannot free the replica id; it ends with its lease");
                }
            }
        })
    }

    fn reload(&self) -> BoxFuture<'_, Result<(), WorkError>> {
        Box::pin(async move {
            let new = crate::config::load(&self.shared.config_path)?;
            let old = self.shared.config();
            let plan = reload::plan(&old, &new);
            for (model, key) in plan.rotated_api_keys {
                if self.shared.router.set_api_key(&model, key) {
                    tracing::info!(
                        key = %format_args!("models.{model}.api_key"),
                        "config reload: new value used from the next request on"
                    );
                }
            }
            if !plan.needs_restart.is_empty() {
                tracing::warn!(
                    keys = %plan.needs_restart.join(", "),
                    "config reload: these changed keys keep their old values until the daemon restarts (clawdbot daemon restart)"
                );
            }
            if let Some(channel) = &self.shared.channel {
                channel.set_max_parts(new.reply.max_parts);
            }
            self.shared.conversations.reconfigure(&old, &new);
            *self
                .shared
                .config
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
            Ok(())
        })
    }
}
