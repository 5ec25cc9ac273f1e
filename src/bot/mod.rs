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
mod inflight;
mod intake;
mod journal;
mod open_cards;
mod order;
mod pipeline;
mod redelivery;
mod reload;
mod seen;

pub(crate) use health::{preflight_checks, CheckProgress};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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

use conversations::Conversations;
use inflight::InFlight;
use intake::JournalSink;
use journal::Journal;
use open_cards::OpenCards;
use order::TurnOrder;

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
}

impl Shared {
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
                Some(crate::state::redis::RedisState::connect(cfg).await?)
            }
            _ => None,
        };
        // Without a journal no message could be ACKed safely: a startup error, not a
        // silent downgrade.
        let (tx, rx) = mpsc::unbounded_channel::<Inbound>();
        let opened = Journal::open(&paths.state, tx)?;
        let journal = Arc::new(opened.journal);
        let channel = match &config.channel {
            Some(ch) => {
                let tuning = ChannelTuning {
                    replay_file: Some(paths.state.join(CALLBACK_REPLAY_FILE)),
                    ..ChannelTuning::default()
                };
                let sink = JournalSink(journal.clone());
                let channel =
                    Channel::start_shared(ch.dingtalk.clone(), sink, tuning, redis.clone()).await?;
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
            router: ModelRouter::with_state(&config, redis),
            conversations: Conversations::new(&config),
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
        });
        cards::close_left_open(&shared);
        pipeline::replay(&shared, opened.pending, opened.replies);
        tokio::spawn(pipeline::dispatch(shared.clone(), rx));
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
    }

    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        Some(crate::ops::readiness::ReadinessFacts {
            channel: self.shared.channel.as_ref().map(Channel::readiness),
            inbox: self.shared.inflight.readiness(),
            draining: !self.shared.accepting.load(Ordering::SeqCst),
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
            self.shared.journal.flush().await;
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
