//! The channel facade the bot uses: start ingress (stream client or callback server) in
//! the background, reply to and send messages, open AI cards, report and check health.
//!
//! Invariants: `start` returns promptly even when DingTalk is unreachable (the stream
//! client keeps reconnecting); replies fall back from an expired/gone session webhook to
//! the OpenAPI; long answers are split (see [`split`](super::split)); no message text or
//! secret is ever logged.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::OpenApi;
use super::card::CardStream;
use super::error::ChannelError;
use super::ingress::{InboundSink, Ingress};
use super::message::Inbound;
use super::send::{batch_send, group_send};
use super::split::split_text;
use super::stats::{self, Stats};
use super::stream::{StreamClient, StreamTuning};
use super::webhook::{post_session, session_body};
use crate::config::{ConversationKind, DingTalkConfig, DingTalkMode};
use crate::ipc::proto::SendOutcome;
use crate::status::ChannelReport;

/// Session webhooks this close to expiry are treated as expired.
const SESSION_MARGIN_MS: u64 = 5_000;

/// Timings that tests may shorten.
#[derive(Debug, Clone, Default)]
pub struct ChannelTuning {
    pub stream: StreamTuning,
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
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    callback_addr: Option<std::net::SocketAddr>,
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
    pub async fn start(cfg: DingTalkConfig, inbound: impl InboundSink) -> Result<Channel, String> {
        Self::start_with(cfg, inbound, ChannelTuning::default()).await
    }

    /// Starts the channel: spawns the stream client, or binds the callback server (an
    /// error only when the listen address cannot be bound).
    pub async fn start_with(
        cfg: DingTalkConfig,
        inbound: impl InboundSink,
        tuning: ChannelTuning,
    ) -> Result<Channel, String> {
        if cfg.client_id.trim().is_empty() || cfg.client_secret.is_empty() {
            return Err("channel.dingtalk needs client_id and client_secret".into());
        }
        let cfg = Arc::new(cfg);
        let http = super::http::client();
        let api = Arc::new(OpenApi::new(
            http.clone(),
            &cfg.api_base,
            &cfg.client_id,
            cfg.client_secret.expose(),
        ));
        let mode = match cfg.mode {
            DingTalkMode::Stream => "stream",
            DingTalkMode::Http => "http",
        };
        let stats = Arc::new(Stats::new(mode));
        let ingress = Arc::new(Ingress::new(stats.clone(), Box::new(inbound)));
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut callback_addr = None;
        match cfg.mode {
            DingTalkMode::Stream => {
                let client = StreamClient {
                    cfg: cfg.clone(),
                    http: http.clone(),
                    ingress,
                    stats: stats.clone(),
                    tuning: tuning.stream,
                };
                tasks.push(tokio::spawn(client.run(rx)));
            }
            DingTalkMode::Http => {
                let secret = cfg.client_secret.expose().to_string();
                let (addr, task) =
                    super::callback::serve(&cfg.http_listen, secret, ingress, rx).await?;
                stats.set_connected(stats::LISTENING, super::now_ms());
                tracing::info!(listen = %addr, "DingTalk callback server listening");
                callback_addr = Some(addr);
                tasks.push(task);
            }
        }
        let inner = Inner {
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

    /// Answers `to`: through its session webhook while valid (mentioning the asker in
    /// groups), else — or on errcode 300001 — through the OpenAPI. Long text is split.
    pub async fn reply(
        &self,
        to: &Inbound,
        text: &str,
        markdown: bool,
    ) -> Result<(), ChannelError> {
        let mut use_session = to.session_webhook.as_deref().filter(|_| {
            to.session_webhook_expires_ms
                .is_none_or(|exp| super::now_ms() + SESSION_MARGIN_MS < exp)
        });
        let at = match to.conversation_kind {
            ConversationKind::Group => to.sender_staff_id.as_deref(),
            ConversationKind::Direct => None,
        };
        for chunk in split_text(text) {
            if let Some(url) = use_session {
                match post_session(&self.inner.http, url, &session_body(&chunk, markdown, at)).await
                {
                    Ok(()) => {
                        self.count_out();
                        continue;
                    }
                    Err(e) if e.is_session_gone() => {
                        tracing::info!(msg_id = %to.msg_id, "session webhook gone; falling back to the OpenAPI");
                        use_session = None;
                    }
                    Err(e) => return Err(self.failed(e)),
                }
            }
            let target =
                match to.conversation_kind {
                    ConversationKind::Group => Target::Group(to.conversation_id.clone()),
                    ConversationKind::Direct => match &to.sender_staff_id {
                        Some(s) => Target::User(s.clone()),
                        None => return Err(self.failed(ChannelError::Unsupported(
                            "session webhook expired and the sender has no staff id for a 1:1 send"
                                .into(),
                        ))),
                    },
                };
            self.send_to(&target, &chunk, markdown).await?;
        }
        Ok(())
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
        let mut outcome = None;
        for chunk in split_text(text) {
            outcome = Some(self.send_to(&resolved, &chunk, markdown).await?);
        }
        let (target, route) = match &resolved {
            Target::Group(c) => (c.clone(), "group_send"),
            Target::User(u) => (format!("user:{u}"), "batch_send"),
        };
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

    /// Opens an AI card answering `to` (requires `card_template_id`).
    pub async fn open_card(&self, to: &Inbound) -> Result<CardStream, ChannelError> {
        let cfg = &self.inner.cfg;
        let template = cfg
            .card_template_id
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ChannelError::Unsupported("AI cards need channel.dingtalk.card_template_id".into())
            })?;
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

    /// Health: the stream is connected (or the callback server listens) and an access
    /// token can be obtained. `Err` carries the reason and a fix.
    pub async fn check(&self) -> Result<String, String> {
        let report = self.report();
        let token = self.inner.api.tokens.get().await;
        let conn_ok = report.state == stats::CONNECTED || report.state == stats::LISTENING;
        match (conn_ok, token) {
            (true, Ok(_)) => Ok(format!("{} {} (reconnects {}); access token ok", report.mode, report.state, report.reconnects)),
            (_, Err(e)) => Err(format!(
                "cannot obtain a DingTalk access token: {e}; check channel.dingtalk.client_id/client_secret and api_base"
            )),
            (false, Ok(_)) => Err(format!(
                "DingTalk {} is {} (last error: {}); check network access to api_base and that Stream mode is enabled for the app",
                report.mode,
                report.state,
                report.last_error.unwrap_or_else(|| "none".into())
            )),
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
        self.inner.stats.set_state(stats::STOPPED);
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
