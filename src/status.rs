//! Reports the daemon gives over its control socket, shared by `daemon status`,
//! `healthcheck` and `send`. They hold figures and states only: never message text,
//! prompts or secrets.

use serde::{Deserialize, Serialize};

/// Version of the JSON documents printed with `--json`. Bump only on breaking changes, and
/// say what changed in README "JSON output" (and in `docs/json/*.schema.json`).
pub const SCHEMA_VERSION: u32 = 2;

/// The values of [`ChannelReport::state`].
pub mod channel_state {
    pub const CONNECTING: &str = "connecting";
    pub const CONNECTED: &str = "connected";
    pub const RECONNECTING: &str = "reconnecting";
    /// HTTP (callback) mode: the callback port takes messages.
    pub const LISTENING: &str = "listening";
    pub const STOPPED: &str = "stopped";
}

/// The values of [`ChannelReport::auth`]: whether DingTalk accepted the app's credentials.
pub mod channel_auth {
    pub const PENDING: &str = "pending";
    pub const OK: &str = "ok";
    pub const REFUSED: &str = "refused";
}

/// What `daemon status` shows for one running daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonReport {
    pub name: String,
    pub pid: u32,
    pub version: String,
    /// Unix milliseconds when the daemon became ready.
    pub started_at_ms: u64,
    pub uptime_secs: u64,
    pub config_path: Option<String>,
    pub log_path: String,
    pub socket: String,
    /// What the daemon runs: `bot`, `gateway` (a model service; the JSON word is kept for
    /// scripts) or `sim` (quickstart's DingTalk simulator, a supervised `sim serve`).
    pub workload: String,
    /// The most recent error the daemon logged (no message text).
    pub last_error: Option<String>,
    /// Log lines that could not be written (disk full, folder removed...).
    #[serde(default)]
    pub log_write_errors: u64,
    pub channel: Option<ChannelReport>,
    #[serde(default)]
    pub models: Vec<ModelReport>,
    /// The supervised model service; `gateway` in JSON, as scripts already read it.
    #[serde(rename = "gateway")]
    pub model_service: Option<ModelServiceReport>,
    /// The bot's durable message journal.
    #[serde(default)]
    pub journal: Option<JournalReport>,
    /// Replies DingTalk did not take at once (bot only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
    /// Busy replies by the wait that caused them (bot only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_replies: Option<BusyReport>,
    /// Where the bot's shared state lives (bot only). `shared_state` in JSON: the
    /// daemon's own `state` (running, ...) already has that name.
    #[serde(
        default,
        rename = "shared_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<StateReport>,
}

/// `state.backend` as running: `local`, or `redis` with this replica's view of Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateReport {
    /// `local` or `redis`.
    pub backend: String,
    /// This replica's id in Redis (redis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// `host:port` of the Redis server, never its URL (redis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_server: Option<String>,
    /// Whether Redis answered this replica's last heartbeat (redis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ok: Option<bool>,
    /// Why intakes fail lately though Redis may answer the heartbeat: the error's kind
    /// (`OOM` for a full Redis, `timeout`, ...), until an intake succeeds again (redis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake_error: Option<String>,
    /// Replicas (this one included) whose heartbeat is younger than the lease, as of the
    /// last heartbeat (redis only; 0 while Redis does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_replicas: Option<u64>,
}

/// Busy replies sent (`reply.busy_text`), whichever wait ran out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BusyReport {
    pub total: u64,
    /// The turn waited behind its conversation's earlier turns past `limits.queue.max_wait_ms`.
    pub behind_conversation: u64,
    /// The turn's conversation already had `limits.queue.max_waiting` turns waiting.
    #[serde(default)]
    pub line_full: u64,
    /// The model's queue was full, or its wait for a model slot ran out.
    pub model_queue: u64,
    /// Of `total`, not sent: DingTalk did not take them within the delivery limit (under
    /// a flood its send rate cannot carry one per message; refused at once when it could
    /// not even with every slot). Not retried: the message is marked answered without it.
    #[serde(default)]
    pub not_sent: u64,
}

/// Replies being retried by the running daemon, and how retries ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Messages whose reply is waiting for its next try now.
    pub replies_retrying: u64,
    /// Replies delivered by a retry.
    pub replies_redelivered: u64,
    /// Replies given up on after every retry: `reply.undelivered_text` was sent instead.
    pub replies_given_up: u64,
    /// Not even `undelivered_text` went out: left in the inbox for the next start.
    pub replies_left_pending: u64,
    /// AI cards a previous run left open, finalized (FAILED) at start.
    pub cards_closed_after_restart: u64,
}

/// The durable journal: what is waiting, what failed, and the measured crash window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalReport {
    pub path: String,
    /// Accepted messages not yet answered.
    pub pending: usize,
    /// Group commits (one fdatasync each) and the records they covered.
    pub commits: u64,
    pub records: u64,
    /// Messages that could not be made durable (not ACKed, so DingTalk may redeliver).
    pub failed_accepts: u64,
    /// "Answered" records waiting to be written again after a write error.
    pub done_retry_queue: usize,
    pub compactions: u64,
    pub last_error: Option<String>,
    /// Reply accepted by DingTalk -> its "answered" record written (the one window in which
    /// a crash answers a message twice), over the recent replies, in microseconds.
    pub done_window_us_p50: Option<u64>,
    pub done_window_us_p99: Option<u64>,
    pub done_window_us_max: Option<u64>,
}

/// The DingTalk channel's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelReport {
    /// `connecting`, `connected`, `reconnecting`, `listening` (HTTP mode) or `stopped`.
    pub state: String,
    pub mode: String,
    /// Unix ms when the current connection was established.
    pub connected_since_ms: Option<u64>,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// `pending` until DingTalk first accepted (`ok`) or refused (`refused`, with its
    /// answer in `last_error`) the app's credentials.
    #[serde(default)]
    pub auth: String,
    pub messages_in: u64,
    pub messages_out: u64,
    pub duplicates_dropped: u64,
    pub send_failures: u64,
}

/// One model's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelReport {
    pub name: String,
    pub limit: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// The most requests ever in flight at once (never above `limit`).
    pub peak_in_flight: usize,
    /// With `state.backend: redis`: requests in flight at this model across all
    /// replicas (never above `limit`), as last seen in Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_in_flight: Option<usize>,
    /// With `state.backend: redis`: set while the live replicas are configured with
    /// different limits for this model (all then use the lowest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_limit_conflict: Option<String>,
    /// Requests answered (one per answered turn).
    pub served: u64,
    /// Requests that failed: with several replicas a turn retried on another replica
    /// counts each failed request, so this can exceed the turns that failed (see
    /// `replica_retries`).
    pub failures: u64,
    pub timeouts: u64,
    pub fallbacks: u64,
    pub busy_rejections: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    /// Largest prompt (chars) sent recently, and the budget, to spot trimming pressure.
    pub max_prompt_chars_seen: usize,
    pub prompt_budget_chars: usize,
    pub last_error: Option<String>,
    /// Requests sent again to another replica after one failed before its first token.
    #[serde(default)]
    pub replica_retries: u64,
    /// The runtimes serving this model, in config order (one for a `base_url` model).
    #[serde(default)]
    pub replicas: Vec<ReplicaReport>,
}

/// One runtime of a model (`models.NAME.replicas[i]`, or its `base_url`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// The replica's `base_url`, any password in it masked.
    pub base_url: String,
    /// Its own concurrency limit.
    pub limit: usize,
    pub in_flight: usize,
    /// `healthy` or `cooling_down` (no traffic while another replica is healthy).
    pub state: String,
    /// Failed requests that were the replica's fault (connect, 5xx, 401/403/404/429, its
    /// own first-token or idle timeout, a broken stream; not the turn's own deadline).
    pub failures: u64,
    pub failures_in_a_row: u32,
    pub served: u64,
}

/// A supervised model-runtime command (`daemon start --exec`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelServiceReport {
    pub command: String,
    /// `running`, `restarting` (between a crash and its restart) or `failing` (the child
    /// ended by itself 3 times within 60 s; back to `running` once it stays up that long).
    #[serde(default)]
    pub state: String,
    pub child_pid: Option<u32>,
    pub restarts: u64,
    /// Exits by itself within the last 60 s.
    #[serde(default)]
    pub recent_exits: u64,
    /// Unix ms of the previous child's end.
    #[serde(default)]
    pub last_exit_at_ms: Option<u64>,
    pub last_exit: Option<String>,
    pub health_url: Option<String>,
    pub healthy: Option<bool>,
}
