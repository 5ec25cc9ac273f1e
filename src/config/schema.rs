//! The config file's shape. Every struct rejects unknown keys, so a typo is an error with
//! a line and column instead of a silently ignored setting. Defaults are chosen for a slow
//! local model behind a busy group chat.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::checks::MIN_PROMPT_CHARS;
use super::de::{
    at_least, counts_in_range, http_url, http_url_opt, http_urls, in_range, in_range_opt, models,
    name, name_opt, socket_addr, targets,
};
use super::env::Secret;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Model endpoints by name (the names used by routing and limits).
    #[serde(deserialize_with = "models")]
    pub models: BTreeMap<String, ModelConfig>,
    pub routing: RoutingConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where messages come from. Required to run the bot, optional for `config check`.
    #[serde(default)]
    pub channel: Option<ChannelConfig>,
    #[serde(default)]
    pub reply: ReplyConfig,
    /// Which chat commands the bot answers itself (all on by default).
    #[serde(default)]
    pub commands: CommandsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub prompt: PromptConfig,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// The HTTP ops endpoint (`/livez`, `/readyz`, `/metrics`, status page); off when absent.
    #[serde(default)]
    pub ops: Option<OpsConfig>,
    /// Where state shared by replicas lives (`local` by default: this process only).
    #[serde(default)]
    pub state: StateConfig,
}

/// `state:`: the bot's state backend.
///
/// Invariant (checked at load): `backend: redis` comes with a `redis:` section, and a
/// `redis:` section is only accepted with `backend: redis`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: StateBackend,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// Which engine holds the state several replicas must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// Everything in this process and its state folder (one daemon per bot).
    #[default]
    Local,
    /// Dedupe, inbox, turn order, memory, model limits and send rates in one Redis server,
    /// shared by every replica with the same `key_prefix`.
    Redis,
}

/// `state.redis:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`; a secret (the password) never shown.
    pub url: Secret,
    /// Prefix of every key; replicas of one bot share it, different bots must not.
    #[serde(default = "default_redis_key_prefix", deserialize_with = "name")]
    pub key_prefix: String,
    /// This replica's name in Redis (default: `HOSTNAME-PID`).
    #[serde(default, deserialize_with = "name_opt")]
    pub replica_id: Option<String>,
    /// How long a replica's claims (messages, model slots, turn locks) outlive its last
    /// heartbeat before other replicas take them over.
    #[serde(
        default = "default_redis_lease_ms",
        deserialize_with = "in_range::<_, _, 1000, 600000>"
    )]
    pub lease_ms: u64,
}

fn default_redis_key_prefix() -> String {
    "clawdbot".to_string()
}

fn default_redis_lease_ms() -> u64 {
    10_000
}

/// The HTTP ops endpoint.
///
/// Invariant (checked at load): `listen` is a loopback address unless `allow_remote` is
/// true, so figures are never served beyond this host by accident.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// `IP:PORT` to serve on, e.g. `127.0.0.1:9464`.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: String,
    /// Must be true for a `listen` address that is not loopback.
    #[serde(default)]
    pub allow_remote: bool,
    /// Host names (`name` or `name:port`) the endpoint answers for besides its own address
    /// and `localhost` (a proxy's name); any other `Host` gets 421 (DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Any server speaking `POST {base_url}/chat/completions` (llama.cpp, vLLM, Ollama, a gateway).
    OpenaiCompatible,
}

/// One model: one runtime (`base_url`) or several serving the same model (`replicas`).
///
/// Invariant (checked at load, with the model's line): exactly one of `base_url` and
/// `replicas` is set, and `replicas` is not empty; [`ModelConfig::endpoints`] is never empty.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Base URL including the version prefix, e.g. `http://127.0.0.1:8000/v1`: the one
    /// runtime serving this model. Mutually exclusive with `replicas`.
    #[serde(default, deserialize_with = "http_url_opt")]
    pub base_url: Option<String>,
    /// Several runtimes serving the same model, each with its own concurrency limit; the
    /// bot spreads turns over them (least in flight). Mutually exclusive with `base_url`.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// Sent as `Authorization: Bearer ...` when set and not empty.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The `model` field of each request.
    #[serde(deserialize_with = "name")]
    pub model: String,
    /// Total budget of one turn in milliseconds, from the message's arrival to the reply.
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "at_least::<_, _, 100>"
    )]
    pub timeout_ms: u64,
    /// TCP connect budget (default: min(2000, timeout_ms / 4)).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Budget from request sent to first content token (default: the time left).
    #[serde(default)]
    pub first_token_timeout_ms: Option<u64>,
    /// Longest silence allowed between two streamed chunks (default: min(5000, timeout_ms / 2)).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Stream the answer (SSE). Needed for AI-card streaming and for the idle watchdog.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Send `stream_options.include_usage` (some servers reject it).
    #[serde(default)]
    pub include_usage: bool,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Another model (by name) to try when this one fails and enough budget is left.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Health URL for checks (default: `{base_url}/models`). With `replicas`, each
    /// replica is probed at its own `{base_url}/models` and this key is refused.
    #[serde(default, deserialize_with = "http_url_opt")]
    pub health_url: Option<String>,
}

/// Most requests at once to one model or one replica (`limits.max_concurrency_per_model`,
/// `replicas[].max_concurrency`): far above any runtime, low enough that no sum of them
/// overflows.
pub const MAX_CONCURRENCY: u64 = 100_000;
/// Most turns `limits.queue.max_waiting` lets wait (each holds its message, ~2 KiB).
pub const MAX_QUEUE_WAITING: u64 = 1_000_000;

/// One runtime of a model served by several (`models.NAME.replicas[]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with base_url (and optionally max_concurrency)"
)]
pub struct ReplicaConfig {
    /// Base URL including the version prefix, e.g. `http://10.0.0.2:8000/v1`.
    #[serde(deserialize_with = "http_url")]
    pub base_url: String,
    /// Requests this runtime gets at once (default: the model's limit, never above it).
    #[serde(default, deserialize_with = "in_range_opt::<_, _, 1, MAX_CONCURRENCY>")]
    pub max_concurrency: Option<usize>,
}

/// Why a model's runtime keys do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsError {
    #[error(
        "base_url and replicas are both set; keep base_url for one runtime or replicas for several"
    )]
    Both,
    #[error("neither base_url nor replicas is set (or replicas is empty); give the runtime's base_url, or replicas: a list of {{base_url}}")]
    Neither,
    #[error("health_url cannot be combined with replicas (each replica is probed at its own base_url/models)")]
    HealthUrlWithReplicas,
}

impl ModelConfig {
    /// Checks that the runtime keys fit together (see the struct's invariant).
    pub fn check_endpoints(&self) -> Result<(), EndpointsError> {
        match (&self.base_url, self.replicas.is_empty()) {
            (Some(_), false) => Err(EndpointsError::Both),
            (None, true) => Err(EndpointsError::Neither),
            (None, false) if self.health_url.is_some() => {
                Err(EndpointsError::HealthUrlWithReplicas)
            }
            _ => Ok(()),
        }
    }

    /// The runtimes serving this model, in config order: `replicas`, or the one at
    /// `base_url` with no limit of its own.
    pub fn endpoints(&self) -> Vec<ReplicaConfig> {
        match &self.base_url {
            Some(url) if self.replicas.is_empty() => vec![ReplicaConfig {
                base_url: url.clone(),
                max_concurrency: None,
            }],
            _ => self.replicas.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub defaults: RoutingDefaults,
    /// First matching rule wins; no match uses `defaults.model`.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDefaults {
    pub model: String,
}

/// Sends matching conversations to another model. Every field given must match.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Sender staff id.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub conversation_type: Option<ConversationKind>,
    pub model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Group,
    Direct,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent requests the bot sends to each model; models not listed get 1.
    #[serde(default, deserialize_with = "counts_in_range::<_, 1, MAX_CONCURRENCY>")]
    pub max_concurrency_per_model: BTreeMap<String, usize>,
    #[serde(default)]
    pub queue: QueueConfig,
}

/// The bot-side queue in front of each model (a queued request in llama.cpp sends no bytes,
/// so the bot keeps the queue itself and bounds it).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Turns waiting per model beyond the concurrency limit, and per conversation behind
    /// the turn it is answering; more get the busy reply at once.
    #[serde(
        default = "default_queue_depth",
        deserialize_with = "in_range::<_, _, 0, MAX_QUEUE_WAITING>"
    )]
    pub max_waiting: usize,
    /// Longest wait for a slot before the busy reply.
    #[serde(default = "default_queue_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_waiting: default_queue_depth(),
            max_wait_ms: default_queue_wait_ms(),
        }
    }
}

/// The channel section: exactly one channel kind.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub dingtalk: DingTalkConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DingTalkMode {
    /// WebSocket Stream mode (no public URL needed).
    Stream,
    /// DingTalk POSTs each message to our HTTP callback server.
    Http,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkConfig {
    /// App Client ID (AppKey).
    #[serde(deserialize_with = "name")]
    pub client_id: String,
    /// App Client Secret (AppSecret).
    pub client_secret: Secret,
    /// Robot code; for internal apps the same as the client id.
    #[serde(default, deserialize_with = "name_opt")]
    pub robot_code: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: DingTalkMode,
    /// New OpenAPI host (connections/open, tokens, sends, cards).
    #[serde(default = "default_api_base", deserialize_with = "http_url")]
    pub api_base: String,
    /// Deprecated: DingTalk's old API host. The bot makes no call there (its tokens,
    /// sends and cards use `api_base`; session webhook URLs come whole in each message).
    /// Still accepted and checked so that old files load; its origin stays allowed for
    /// session webhooks, like an entry of `webhook_hosts`, and loading warns
    /// ([`crate::config::deprecation_warnings`]).
    #[serde(default, deserialize_with = "http_url_opt")]
    pub oapi_base: Option<String>,
    /// Listen address of the HTTP callback server (mode: http): `IP:PORT`.
    #[serde(default = "default_http_listen", deserialize_with = "socket_addr")]
    pub http_listen: String,
    /// AI card template id; when set, answers stream into a card.
    #[serde(default)]
    pub card_template_id: Option<String>,
    /// Template variable the answer streams into.
    #[serde(default = "default_card_key")]
    pub card_content_key: String,
    /// Names for `clawdbot send --to NAME`: a conversation id (`cid...`), or `user:STAFFID`.
    #[serde(default, deserialize_with = "targets")]
    pub targets: BTreeMap<String, String>,
    /// Messages into chats (session webhook, OpenAPI sends, AI cards), counted in any
    /// sliding 1 s window.
    #[serde(default)]
    pub send_rate: SendRateConfig,
    /// More origins (`https://host[:port]`) session webhooks may point at, besides
    /// DingTalk's own, the `api_base` origin and the deprecated `oapi_base`'s.
    #[serde(default, deserialize_with = "http_urls")]
    pub webhook_hosts: Vec<String>,
}

/// `channel.dingtalk.send_rate`: messages per second, in any sliding 1 s window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SendRateConfig {
    /// For the whole robot (DingTalk: 20 QPS per app per API).
    #[serde(
        default = "default_sends_per_robot",
        deserialize_with = "in_range::<_, _, 1, MAX_SENDS_PER_SECOND>"
    )]
    pub per_robot: usize,
    /// For each conversation (group or 1:1 chat).
    #[serde(
        default = "default_sends_per_conversation",
        deserialize_with = "in_range::<_, _, 1, MAX_SENDS_PER_SECOND>"
    )]
    pub per_conversation: usize,
}

/// The largest `send_rate` value.
pub const MAX_SENDS_PER_SECOND: u64 = 10_000;

impl Default for SendRateConfig {
    fn default() -> Self {
        SendRateConfig {
            per_robot: default_sends_per_robot(),
            per_conversation: default_sends_per_conversation(),
        }
    }
}

impl DingTalkConfig {
    /// The robot code, defaulting to the client id as DingTalk does for internal apps.
    pub fn robot_code(&self) -> &str {
        self.robot_code.as_deref().unwrap_or(&self.client_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFormat {
    Text,
    Markdown,
}

/// Chat commands the bot answers itself, without the model; a command switched off is
/// ordinary text sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// `/help`: lists the enabled commands.
    #[serde(default = "yes")]
    pub help: bool,
    /// `/status`: model names, in flight / limit, queue depth, channel state.
    #[serde(default = "yes")]
    pub status: bool,
    /// `/whoami`: the sender's staff id and the conversation's id and kind.
    #[serde(default = "yes")]
    pub whoami: bool,
    /// `/new` and `/reset`: forget the conversation's memory.
    #[serde(default = "yes")]
    pub reset: bool,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            help: true,
            status: true,
            whoami: true,
            reset: true,
        }
    }
}

/// What users see when things go wrong, and how answers are shaped.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    #[serde(default = "default_format")]
    pub format: ReplyFormat,
    /// Sent when the model failed or ran out of time.
    #[serde(default = "default_fallback_text")]
    pub fallback_text: String,
    /// Sent instead of `fallback_text` when the model could not be reached at all
    /// (connection refused, no route, DNS, connect timeout).
    #[serde(default = "default_unreachable_text")]
    pub unreachable_text: String,
    /// Sent when the model's queue or the conversation's line is full, or the wait ran
    /// out; only while DingTalk's send rate has room for it (never retried).
    #[serde(default = "default_busy_text")]
    pub busy_text: String,
    /// Sent for message types the bot cannot read (pictures, files...).
    #[serde(default = "default_unsupported_text")]
    pub unsupported_text: String,
    /// Sent when a user exceeds the per-user rate limit.
    #[serde(default = "default_rate_limited_text")]
    pub rate_limited_text: String,
    /// Sent when access policy refuses the sender.
    #[serde(default = "default_denied_text")]
    pub denied_text: String,
    /// When set, a short notice is sent if no answer arrived after this many ms.
    #[serde(default)]
    pub thinking_notice_ms: Option<u64>,
    #[serde(default = "default_thinking_text")]
    pub thinking_text: String,
    /// Reply to `/new` and `/reset`.
    #[serde(default = "default_reset_text")]
    pub reset_text: String,
    /// Sent after a restart for a message whose session webhook expired meanwhile.
    #[serde(default = "default_restart_sorry_text")]
    pub restart_sorry_text: String,
    /// Longest answer in characters: the model's stream is cut (and closed) once it reaches
    /// this, and the answer ends with [`crate::model::ANSWER_CUT_MARK`].
    #[serde(
        default = "default_max_answer_chars",
        deserialize_with = "in_range::<_, _, MIN_ANSWER_CHARS, MAX_ANSWER_CHARS>"
    )]
    pub max_answer_chars: usize,
    /// Most messages one reply becomes in the chat (long answers are split into parts;
    /// what does not fit in this many parts is cut).
    #[serde(
        default = "default_max_parts",
        deserialize_with = "in_range::<_, _, 1, MAX_REPLY_PARTS>"
    )]
    pub max_parts: usize,
    /// Sent (session webhook while valid, else the OpenAPI) when an answer could still not
    /// be delivered after `redelivery_attempts` retries (a busy reply is not retried).
    #[serde(default = "default_undelivered_text")]
    pub undelivered_text: String,
    /// Retries of an undelivered reply by the running daemon, after the turn's own try
    /// (0 = go straight to `undelivered_text`).
    #[serde(
        default = "default_redelivery_attempts",
        deserialize_with = "in_range::<_, _, 0, MAX_REDELIVERY_ATTEMPTS>"
    )]
    pub redelivery_attempts: u32,
    /// Wait before the first retry; each later one waits twice as long, at most 60 s
    /// (each wait is drawn between half and all of that, so retries spread out).
    #[serde(
        default = "default_redelivery_delay_ms",
        deserialize_with = "in_range::<_, _, 10, MAX_REDELIVERY_DELAY_MS>"
    )]
    pub redelivery_delay_ms: u64,
}

/// Most retries of an undelivered reply (`reply.redelivery_attempts`): with the 60 s cap
/// between tries, a message's retries end within about 20 minutes.
pub const MAX_REDELIVERY_ATTEMPTS: u64 = 20;
/// Longest `reply.redelivery_delay_ms` (the doubling is capped there too).
pub const MAX_REDELIVERY_DELAY_MS: u64 = 60_000;

/// The smallest `reply.max_answer_chars`.
pub const MIN_ANSWER_CHARS: u64 = 100;
/// The largest `reply.max_answer_chars` (memory per turn stays bounded).
pub const MAX_ANSWER_CHARS: u64 = 100_000;
/// The largest `reply.max_parts`.
pub const MAX_REPLY_PARTS: u64 = 20;

impl Default for ReplyConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("reply defaults")
    }
}

/// The system prompt that keeps answers bot-friendly.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// Per conversation id: a system prompt that replaces the default one.
    #[serde(default)]
    pub conversation_prompts: BTreeMap<String, String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            system_prompt: default_system_prompt(),
            conversation_prompts: BTreeMap::new(),
        }
    }
}

/// Per-conversation memory.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Earlier user/assistant turns kept per conversation (0 = no memory).
    #[serde(default = "default_max_turns")]
    pub max_turns: usize,
    /// Forget a conversation after this many seconds without messages.
    #[serde(default = "default_idle_reset_secs")]
    pub idle_reset_secs: u64,
    /// Conversations remembered at once; when full, the least recently used 1/32 of them
    /// are forgotten together.
    #[serde(default = "default_max_conversations")]
    pub max_conversations: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_turns: default_max_turns(),
            idle_reset_secs: default_idle_reset_secs(),
            max_conversations: default_max_conversations(),
        }
    }
}

/// Prompt size budget: history is dropped oldest first, then the message itself is cut.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Characters of all messages sent to the model together (system prompt included);
    /// at least [`MIN_PROMPT_CHARS`], so a question is never cut to nothing.
    #[serde(
        default = "default_max_prompt_chars",
        deserialize_with = "at_least::<_, _, MIN_PROMPT_CHARS>"
    )]
    pub max_chars: usize,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            max_chars: default_max_prompt_chars(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessPolicy {
    Open,
    Allowlist,
}

/// Who may talk to the bot, and how often.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    #[serde(default = "open")]
    pub direct: AccessPolicy,
    #[serde(default = "open")]
    pub group: AccessPolicy,
    /// Staff ids allowed in direct chats under `allowlist`.
    #[serde(default)]
    pub allow_users: Vec<String>,
    /// Conversation ids allowed under `allowlist` for groups.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Messages one user may send per window; 0 disables the limit.
    #[serde(default = "default_user_rate")]
    pub user_rate_limit: u32,
    #[serde(default = "default_user_rate_window")]
    pub user_rate_window_secs: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("access defaults")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `logging.target`: where a daemon's log goes when `--log` does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogTargetSetting {
    /// stderr for `daemon run` under systemd (`JOURNAL_STREAM`) or in a container, else
    /// the log file.
    #[default]
    Auto,
    /// Always stderr (`daemon run` only: `daemon start` refuses it).
    Stderr,
    /// Always the log file.
    File,
}

/// `logging.level`: `error`, `warn`, `info`, `debug` or `trace` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Every level, least verbose first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// Parses a level name, ignoring case and surrounding spaces.
    pub fn parse(v: &str) -> Result<LogLevel, UnknownLevel> {
        let v = v.trim();
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| UnknownLevel(v.to_string()))
    }
}

/// A log level name that is none of the five (a level name is not a secret: shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a level: use error, warn, info, debug or trace")]
pub struct UnknownLevel(pub String);

/// Written as its name (the config reference reads the defaults from a serialized config).
impl serde::Serialize for LogLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::scalar(d, LogLevel::parse)
    }
}

/// The daemon's log file: bounded by size and count.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Rotate when the active file would exceed this many bytes.
    #[serde(
        default = "default_log_max_bytes",
        deserialize_with = "at_least::<_, _, 4096>"
    )]
    pub max_bytes: u64,
    /// Rotated files kept besides the active one (`NAME.log.1` is the newest).
    #[serde(
        default = "default_log_max_files",
        deserialize_with = "at_least::<_, _, 1>"
    )]
    pub max_files: usize,
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// stderr or the log file (see [`LogTargetSetting`]); `--log` overrides it.
    #[serde(default)]
    pub target: LogTargetSetting,
    /// How much this program logs; dependencies are capped at `warn` whatever the level
    /// (they would log raw frames, with message text, at debug and trace).
    #[serde(default = "default_log_level")]
    pub level: LogLevel,
    /// Log message text, prompts and answers. Off by default: privacy is why models are local.
    #[serde(default)]
    pub log_message_text: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("logging defaults")
    }
}

fn yes() -> bool {
    true
}
fn open() -> AccessPolicy {
    AccessPolicy::Open
}
fn default_timeout_ms() -> u64 {
    12_000
}
fn default_queue_depth() -> usize {
    64
}
fn default_queue_wait_ms() -> u64 {
    8_000
}
fn default_mode() -> DingTalkMode {
    DingTalkMode::Stream
}
fn default_api_base() -> String {
    "https://api.dingtalk.com".into()
}
fn default_http_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_card_key() -> String {
    "msgContent".into()
}
fn default_format() -> ReplyFormat {
    ReplyFormat::Markdown
}
fn default_fallback_text() -> String {
    "Sorry, I could not get an answer in time. Please try again in a moment.".into()
}
fn default_unreachable_text() -> String {
    "Sorry, I cannot reach my language model right now. Please try again later.".into()
}
fn default_busy_text() -> String {
    "I'm busy answering other questions right now. Please ask again in a minute.".into()
}
fn default_unsupported_text() -> String {
    "Sorry, I can only read text messages (and voice messages with a transcript).".into()
}
fn default_rate_limited_text() -> String {
    "You are sending messages faster than I can answer. Please wait a little.".into()
}
fn default_denied_text() -> String {
    "Sorry, this bot is not enabled for you here.".into()
}
fn default_thinking_text() -> String {
    "Thinking...".into()
}
fn default_reset_text() -> String {
    "OK, I forgot our earlier conversation.".into()
}
fn default_restart_sorry_text() -> String {
    "Sorry, I was restarted before I could answer your last message. Please ask again.".into()
}
fn default_undelivered_text() -> String {
    "Sorry, I could not deliver my answer to your last message. Please ask again.".into()
}
fn default_redelivery_attempts() -> u32 {
    5
}
fn default_redelivery_delay_ms() -> u64 {
    2000
}
fn default_system_prompt() -> String {
    "You are a helpful assistant answering in a DingTalk chat. Keep answers short and \
     plain: a few sentences or a short list, simple markdown only, no tables or HTML. \
     If you do not know, say so."
        .into()
}
fn default_sends_per_robot() -> usize {
    20
}
fn default_sends_per_conversation() -> usize {
    5
}
fn default_max_answer_chars() -> usize {
    8_000
}
fn default_max_parts() -> usize {
    4
}
fn default_max_turns() -> usize {
    6
}
fn default_idle_reset_secs() -> u64 {
    1_800
}
fn default_max_conversations() -> usize {
    10_000
}
fn default_max_prompt_chars() -> usize {
    6_000
}
fn default_user_rate() -> u32 {
    20
}
fn default_user_rate_window() -> u64 {
    60
}
fn default_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_log_max_files() -> usize {
    5
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_log_level() -> LogLevel {
    LogLevel::Info
}
