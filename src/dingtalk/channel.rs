//! The channel facade the bot uses: start ingress (stream client or callback server) in
//! the background, reply to and send messages, open AI cards, report and check health.
//!
//! Invariants: `start` returns promptly even when DingTalk is unreachable (the stream
//! client keeps reconnecting); replies fall back from an expired/gone session webhook to
//! the OpenAPI; long answers are split (see [`split`](super::split)) into at most
//! `reply.max_parts` messages; every message into a chat, whatever its route, first takes
//! a slot of the [`SendLimiter`] (`send_rate`, any sliding 1 s window); one reply or send
//! ends within [`REPLY_DELIVERY_LIMIT`]; no message text or secret is ever logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::OpenApi;
use super::card::{CardRef, CardStream};
use super::error::{ChannelError, ChannelStartError, ChannelUnhealthy};
use super::ingress::{InboundSink, Ingress};
use super::limiter::{AnswerComing, SendLimiter, SendPriority, SendSlot};
use super::message::Inbound;
use super::outgoing::OutgoingReply;
use super::send::{batch_send, group_send};
use super::shared_rate::SharedSendRate;
use super::split::{split_bounded, split_text};
use super::stats::Stats;
use super::stream::{StreamClient, StreamTuning};
use super::webhook::{post_session, session_body};
use super::webhook_allow::WebhookAllowlist;
use crate::config::{ConversationKind, DingTalkConfig, DingTalkMode};
use crate::ipc::proto::SendOutcome;
use crate::listen::ListenLimits;
use crate::state::redis::RedisState;
use crate::status::channel_state;
use crate::status::ChannelReport;

/// Session webhooks this close to expiry are treated as expired.
const SESSION_MARGIN_MS: u64 = 5_000;

/// Longest time one [`Channel::reply`] or [`Channel::send`] may take, all its parts, their
/// waits for a send slot and DingTalk's answers included. A turn's answer is ready by its
/// `timeout_ms`, so its reply is delivered (or given up) by `timeout_ms` plus this margin.
pub const REPLY_DELIVERY_LIMIT: Duration = Duration::from_secs(10);

/// `reply.max_parts` until the bot sets it.
const DEFAULT_MAX_PARTS: usize = 4;

/// Timings that tests may shorten.
#[derive(Debug, Clone)]
pub struct ChannelTuning {
    pub stream: StreamTuning,
    /// Longest time of one reply or send (default [`REPLY_DELIVERY_LIMIT`]).
    pub delivery_limit: Duration,
    /// Limits of the HTTP callback listener (mode: http).
    pub callback: ListenLimits,
    /// Where the callback replay guard records admitted (timestamp, sign) pairs, so they
    /// stay refused across restarts (the daemon's state folder); `None` keeps them in
    /// memory only.
    pub replay_file: Option<std::path::PathBuf>,
}

impl Default for ChannelTuning {
    fn default() -> Self {
        ChannelTuning {
            stream: StreamTuning::default(),
            delivery_limit: REPLY_DELIVERY_LIMIT,
            callback: ListenLimits::default(),
            replay_file: None,
        }
    }
}

/// The DingTalk channel; cheap to clone.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<DingTalkConfig>,
    http: reqwest::Client,
    api: Arc<OpenApi>,
    webhooks: WebhookAllowlist,
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    callback_addr: Option<std::net::SocketAddr>,
    /// Messages into chats, per robot and per conversation.
    sends: SendLimiter,
    /// Most messages one reply becomes (`reply.max_parts`, live: SIGHUP may change it).
    max_parts: AtomicUsize,
    /// Longest time of one reply or send.
    delivery_limit: Duration,
}

/// HTTP mode's "first successful authentication": fetches an access token until DingTalk
/// gives one ([`Stats::authenticated`]) or refuses the credentials ([`Stats::refused`]),
/// retrying transient errors with the stream's backoff; ends at shutdown.
async fn first_token(
    api: Arc<OpenApi>,
    stats: Arc<Stats>,
    backoff: StreamTuning,
    mut shutdown: watch::Receiver<bool>,
) {
    for attempt in 0u32.. {
        let result = tokio::select! {
            r = api.tokens.get() => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(_) => return stats.authenticated(),
            Err(e) if e.is_credentials_refused() => return stats.refused(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot obtain a DingTalk access token yet");
                stats.set_error(e.to_string());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(super::stream::backoff(&backoff, attempt)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Where a proactive send goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(String),
    User(String),
}

/// Resolves `target`: an alias from `targets`, `user:STAFFID`, or a conversation id (`cid...`).
pub fn resolve_target(cfg: &DingTalkConfig, target: &str) -> Result<Target, ChannelError> {
    let raw = cfg
        .targets
        .get(target)
        .map(String::as_str)
        .unwrap_or(target)
        .trim();
    if let Some(user) = raw.strip_prefix("user:") {
        let user = user.trim();
        if user.is_empty() {
            return Err(ChannelError::UnknownTarget(target.to_string()));
        }
        return Ok(Target::User(user.to_string()));
    }
    if raw.starts_with("cid") {
        return Ok(Target::Group(raw.to_string()));
    }
    Err(ChannelError::UnknownTarget(target.to_string()))
}

impl Channel {
    /// Starts the channel with default timings. Robot messages go to `inbound` (the bot's
    /// durable journal, or an in-memory `mpsc::Sender<Inbound>`); a frame is ACKed once
    /// `inbound` took its message.
    pub async fn start(
        cfg: DingTalkConfig,
        inbound: impl InboundSink,
    ) -> Result<Channel, ChannelStartError> {
        Self::start_with(cfg, inbound, ChannelTuning::default()).await
    }

    /// Starts the channel: spawns the stream client, or binds the callback server (an
    /// error only when the listen address cannot be bound).
    pub async fn start_with(
        cfg: DingTalkConfig,
        inbound: impl InboundSink,
        tuning: ChannelTuning,
    ) -> Result<Channel, ChannelStartError> {
        Self::start_shared(cfg, inbound, tuning, None).await
    }

    /// [`Channel::start_with`]; with `redis` the access token and the send-rate windows
    /// are shared by every replica of the bot.
    pub(crate) async fn start_shared(
        cfg: DingTalkConfig,
        inbound: impl InboundSink,
        tuning: ChannelTuning,
        redis: Option<RedisState>,
    ) -> Result<Channel, ChannelStartError> {
        if cfg.client_id.trim().is_empty() || cfg.client_secret.is_empty() {
            return Err(ChannelStartError::MissingCredentials);
        }
        let cfg = Arc::new(cfg);
        let http = super::http::client();
        let mut api = OpenApi::new(
            http.clone(),
            &cfg.api_base,
            &cfg.client_id,
            cfg.client_secret.expose(),
        );
        if let Some(r) = &redis {
            api.tokens.share(r.clone(), &cfg.client_id);
        }
        let api = Arc::new(api);
        let mode = match cfg.mode {
            DingTalkMode::Stream => "stream",
            DingTalkMode::Http => "http",
        };
        let stats = Arc::new(Stats::new(mode));
        let ingress = Arc::new(Ingress::new(stats.clone(), Box::new(inbound)));
        let (shutdown, rx) = watch::channel(false);
        let rx_auth = rx.clone();
        let mut tasks = Vec::new();
        let mut callback_addr = None;
        match cfg.mode {
            DingTalkMode::Stream => {
                let client = StreamClient {
                    cfg: cfg.clone(),
                    http: http.clone(),
                    ingress,
                    stats: stats.clone(),
                    tuning: tuning.stream.clone(),
                };
                tasks.push(tokio::spawn(client.run(rx)));
            }
            DingTalkMode::Http => {
                let secret = cfg.client_secret.expose().to_string();
                let limits = tuning.callback;
                let replay = super::callback::replay_guard(tuning.replay_file.as_deref())?;
                let (addr, task) =
                    super::callback::serve(&cfg.http_listen, secret, ingress, replay, limits, rx)
                        .await?;
                stats.set_connected(channel_state::LISTENING, crate::clock::now_ms());
                tracing::info!(
                    listen = %addr,
                    max_connections = limits.max_connections,
                    header_timeout_ms = limits.header_timeout.as_millis() as u64,
                    "DingTalk callback server listening"
                );
                callback_addr = Some(addr);
                tasks.push(task);
                let (api, stats) = (api.clone(), stats.clone());
                let backoff = tuning.stream.clone();
                tasks.push(tokio::spawn(first_token(api, stats, backoff, rx_auth)));
            }
        }
        let (per_robot, per_conversation) =
            (cfg.send_rate.per_robot, cfg.send_rate.per_conversation);
        let sends = match &redis {
            Some(r) => SendLimiter::shared(SharedSendRate::new(
                r.clone(),
                &cfg.client_id,
                per_robot,
                per_conversation,
            )),
            None => SendLimiter::new(per_robot, per_conversation),
        };
        let inner = Inner {
            sends,
            max_parts: AtomicUsize::new(DEFAULT_MAX_PARTS),
            delivery_limit: tuning.delivery_limit,
            webhooks: WebhookAllowlist::from_config(&cfg),
            cfg,
            http,
            api,
            stats,
            shutdown,
            tasks: Mutex::new(tasks),
            callback_addr,
        };
        Ok(Channel {
            inner: Arc::new(inner),
        })
    }

    /// The bound callback address (HTTP mode only).
    pub fn callback_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.callback_addr
    }

    pub fn report(&self) -> ChannelReport {
        self.inner.stats.report()
    }

    /// The channel's state as `/readyz` judges it.
    pub(crate) fn readiness(&self) -> crate::ops::readiness::ChannelFacts {
        let stats = &self.inner.stats;
        crate::ops::readiness::ChannelFacts {
            state: stats.state(),
            streaming: stats.mode() == "stream",
            last_received_ms: stats.last_received_ms(),
            credentials_refused: stats.auth() == crate::status::channel_auth::REFUSED,
        }
    }

    /// Sets `reply.max_parts`: the most messages one [`reply`](Self::reply) becomes.
    pub fn set_max_parts(&self, max_parts: usize) {
        self.inner
            .max_parts
            .store(max_parts.max(1), Ordering::Relaxed);
    }

    /// `text` split into at most `reply.max_parts` parts (the last one marked as cut when
    /// text is left over), none sent yet.
    pub fn outgoing(&self, text: &str, markdown: bool) -> OutgoingReply {
        let max_parts = self.inner.max_parts.load(Ordering::Relaxed);
        OutgoingReply::from_parts(split_bounded(text, max_parts), markdown)
    }

    /// Counts an answer into `conversation` as on its way until the guard is dropped:
    /// busy replies leave it a send slot (see [`SendLimiter::answer_coming`]).
    pub(crate) fn answer_coming(&self, conversation: &str) -> AnswerComing<'_> {
        self.inner.sends.answer_coming(conversation)
    }

    /// Answers `to` with `text`; see [`reply_parts`](Self::reply_parts).
    pub async fn reply(
        &self,
        to: &Inbound,
        text: &str,
        markdown: bool,
    ) -> Result<(), ChannelError> {
        self.reply_parts(to, &mut self.outgoing(text, markdown))
            .await
    }

    /// Sends the parts of `reply` not sent yet, each when the send rate allows, all within
    /// [`REPLY_DELIVERY_LIMIT`]: through `to`'s session webhook while it is valid and on an
    /// allowed origin (mentioning the asker in groups; stream and callback messages both
    /// come through here, so a webhook off the allowlist is never POSTed to); when the webhook is gone (300001) or fails
    /// otherwise (errcode -1 after its one retry, 5xx, no answer), this and the remaining
    /// parts go through the OpenAPI (`groupMessages/send`, or `oToMessages/batchSend` to
    /// the sender's staff id). `reply` records every part DingTalk accepted, so a later
    /// call resumes after them. A failed webhook try may in rare cases have delivered
    /// (a timeout after DingTalk took it): a possible repeat is preferred to a lost reply.
    pub async fn reply_parts(
        &self,
        to: &Inbound,
        reply: &mut OutgoingReply,
    ) -> Result<(), ChannelError> {
        let priority = reply.priority();
        self.within_delivery_limit(priority, |deadline| {
            self.send_remaining(to, reply, deadline)
        })
        .await
    }

    async fn send_remaining(
        &self,
        to: &Inbound,
        reply: &mut OutgoingReply,
        deadline: tokio::time::Instant,
    ) -> Result<(), ChannelError> {
        let mut use_session = to
            .session_webhook
            .as_deref()
            .filter(|_| {
                to.session_webhook_expires_ms
                    .is_none_or(|exp| crate::clock::now_ms() + SESSION_MARGIN_MS < exp)
            })
            .and_then(|url| self.allowed_webhook(url, &to.msg_id));
        let at = match to.conversation_kind {
            ConversationKind::Group => to.sender_staff_id.as_deref(),
            ConversationKind::Direct => None,
        };
        let markdown = reply.markdown();
        while let Some(part) = reply.next_part() {
            let part = part.to_string();
            let mut webhook_error = None;
            // Held until this part is delivered or given up (see `SendSlot`).
            let _slot = self
                .send_slot(&to.conversation_id, deadline, reply.priority())
                .await?;
            if let Some(url) = &use_session {
                match post_session(&self.inner.http, url, &session_body(&part, markdown, at)).await
                {
                    Ok(()) => {
                        self.count_out();
                        reply.mark_sent();
                        continue;
                    }
                    Err(e) => {
                        if e.is_session_gone() {
                            tracing::info!(msg_id = %to.msg_id, "session webhook gone; falling back to the OpenAPI");
                        } else {
                            tracing::warn!(msg_id = %to.msg_id, error = %e, "session webhook failed; trying the OpenAPI");
                        }
                        use_session = None;
                        webhook_error = Some(e);
                    }
                }
            }
            let target = match to.conversation_kind {
                ConversationKind::Group => Target::Group(to.conversation_id.clone()),
                ConversationKind::Direct => match &to.sender_staff_id {
                    Some(s) => Target::User(s.clone()),
                    None => {
                        return Err(self.failed(webhook_error.unwrap_or_else(|| {
                            ChannelError::Unsupported(
                            "session webhook expired and the sender has no staff id for a 1:1 send"
                                .into(),
                        )
                        })))
                    }
                },
            };
            self.send_to(&target, &part, markdown).await?;
            reply.mark_sent();
        }
        Ok(())
    }

    /// Waits for a send slot into `conversation` (see [`SendLimiter`]) until `deadline`;
    /// hold it until the send completed.
    async fn send_slot(
        &self,
        conversation: &str,
        deadline: tokio::time::Instant,
        priority: SendPriority,
    ) -> Result<SendSlot<'_>, ChannelError> {
        let slot = self
            .inner
            .sends
            .acquire(conversation, deadline, priority)
            .await;
        slot.map_err(|_| match priority {
            SendPriority::Answer => self.failed(self.late()),
            // A busy reply the send rate could not carry: not a failure of the channel
            // (not counted, no WARN); the caller says what became of it.
            SendPriority::Yield => self.busy_reply_not_carried(),
        })
    }

    /// Proactive send to an alias, a conversation id (`cid...`) or `user:STAFFID`.
    pub async fn send(
        &self,
        target: &str,
        text: &str,
        markdown: bool,
    ) -> Result<SendOutcome, ChannelError> {
        // An unknown target is the caller's mistake, not a channel failure: not counted.
        let resolved = resolve_target(&self.inner.cfg, target)?;
        let (target, route) = match &resolved {
            Target::Group(c) => (c.clone(), "group_send"),
            Target::User(u) => (format!("user:{u}"), "batch_send"),
        };
        let (resolved, target_key) = (&resolved, &target);
        let outcome = self
            .within_delivery_limit(SendPriority::Answer, |deadline| async move {
                let mut outcome = None;
                for chunk in split_text(text) {
                    let _slot = self
                        .send_slot(target_key, deadline, SendPriority::Answer)
                        .await?;
                    outcome = Some(self.send_to(resolved, &chunk, markdown).await?);
                }
                Ok(outcome)
            })
            .await?;
        Ok(SendOutcome {
            target,
            route: route.into(),
            process_query_key: outcome.flatten(),
        })
    }

    async fn send_to(
        &self,
        target: &Target,
        text: &str,
        markdown: bool,
    ) -> Result<Option<String>, ChannelError> {
        let robot = self.inner.cfg.robot_code();
        let r = match target {
            Target::Group(cid) => group_send(&self.inner.api, robot, cid, text, markdown).await,
            Target::User(u) => {
                batch_send(
                    &self.inner.api,
                    robot,
                    std::slice::from_ref(u),
                    text,
                    markdown,
                )
                .await
            }
        };
        match r {
            Ok(k) => {
                self.count_out();
                Ok(k)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Opens an AI card answering `to` (requires `card_template_id`); the card is a
    /// message into the chat, so it takes a send slot first.
    pub async fn open_card(&self, to: &Inbound) -> Result<CardStream, ChannelError> {
        let cfg = &self.inner.cfg;
        let template = cfg
            .card_template_id
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ChannelError::Unsupported("AI cards need channel.dingtalk.card_template_id".into())
            })?;
        let _slot = self
            .send_slot(
                &to.conversation_id,
                self.delivery_deadline(),
                SendPriority::Answer,
            )
            .await?;
        let card = CardStream::open(
            self.inner.api.clone(),
            template,
            &cfg.card_content_key,
            cfg.robot_code(),
            to,
        )
        .await
        .map_err(|e| self.failed(e))?;
        self.count_out();
        Ok(card)
    }

    /// Finalizes a card a previous run left open: shows `text` and FAILED.
    pub async fn fail_card(&self, card: &CardRef, text: &str) -> Result<(), ChannelError> {
        CardStream::resume(self.inner.api.clone(), card)
            .fail(text)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Health: the stream is connected (or the callback server listens) and an access
    /// token can be obtained. `Err` carries the reason and a fix.
    pub async fn check(&self) -> Result<String, ChannelUnhealthy> {
        let report = self.report();
        let token = self.inner.api.tokens.get().await;
        let conn_ok =
            report.state == channel_state::CONNECTED || report.state == channel_state::LISTENING;
        match (conn_ok, token) {
            (true, Ok(_)) => Ok(format!(
                "{} {} (reconnects {}); access token ok",
                report.mode, report.state, report.reconnects
            )),
            (_, Err(e)) => Err(ChannelUnhealthy::NoToken(e)),
            (false, Ok(_)) => Err(ChannelUnhealthy::NotConnected {
                mode: report.mode.to_string(),
                state: report.state.to_string(),
                last_error: report.last_error.unwrap_or_else(|| "none".into()),
            }),
        }
    }

    /// Stops ingress and waits (bounded) for the background tasks.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = {
            let mut g = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            g.drain(..).collect()
        };
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        self.inner.stats.set_state(channel_state::STOPPED);
    }

    /// When a reply or send starting now must be done.
    fn delivery_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.inner.delivery_limit
    }

    /// The error of a reply or send that ran out of its delivery limit.
    fn late(&self) -> ChannelError {
        ChannelError::DeliveryLate(self.inner.delivery_limit.as_millis() as u64)
    }

    /// Runs one reply or send under the delivery limit: `op` gets the deadline (for its
    /// waits on send slots) and is dropped, mid-request if need be, when the deadline
    /// passes first. A busy reply (`priority` Yield) cut off there is no failure of the
    /// channel, like one the send rate refused (see [`Self::send_slot`]): its slot came
    /// at the last moment, if at all (black box: 0-4 WARN lines per heavy flood).
    async fn within_delivery_limit<T, F>(
        &self,
        priority: SendPriority,
        op: impl FnOnce(tokio::time::Instant) -> F,
    ) -> Result<T, ChannelError>
    where
        F: std::future::Future<Output = Result<T, ChannelError>>,
    {
        let deadline = self.delivery_deadline();
        match tokio::time::timeout_at(deadline, op(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(match priority {
                SendPriority::Answer => self.failed(self.late()),
                SendPriority::Yield => self.busy_reply_not_carried(),
            }),
        }
    }

    /// The error of a busy reply the send rate could not carry within the delivery limit.
    fn busy_reply_not_carried(&self) -> ChannelError {
        ChannelError::NoSlotForBusyReply(self.inner.delivery_limit.as_millis() as u64)
    }

    /// `url` parsed, when it is on the webhook allowlist; a refusal is logged with the
    /// origin only (the URL's query holds the session token).
    fn allowed_webhook(&self, url: &str, msg_id: &str) -> Option<reqwest::Url> {
        match self.inner.webhooks.check(url) {
            Ok(url) => Some(url),
            Err(e) => {
                tracing::warn!(msg_id = %msg_id, reason = %e, "not replying through the message's session webhook; using the OpenAPI");
                None
            }
        }
    }

    fn count_out(&self) {
        Stats::bump(&self.inner.stats.messages_out);
    }

    fn failed(&self, e: ChannelError) -> ChannelError {
        Stats::bump(&self.inner.stats.send_failures);
        self.inner.stats.set_error(e.to_string());
        tracing::warn!(error = %e, "DingTalk send failed");
        e
    }
}
