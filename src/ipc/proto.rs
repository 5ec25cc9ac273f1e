//! Typed requests and responses of the control socket.

use serde::{Deserialize, Serialize};

use crate::status::DaemonReport;

/// Bumped when a request or response changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// First frame of every connection.
    Hello {
        protocol: u32,
        client_version: String,
    },
    /// Full status report.
    Status,
    /// Live checks (channel, model endpoints); may take up to `timeout_ms`.
    Health { timeout_ms: u64 },
    /// Stop accepting work, finish in-flight turns for up to `drain_ms`, then exit.
    Shutdown { drain_ms: u64 },
    /// Send a proactive message through the channel.
    Send {
        to: String,
        text: String,
        markdown: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        protocol: u32,
        daemon_version: String,
        name: String,
        pid: u32,
    },
    Status(Box<DaemonReport>),
    Health(HealthReport),
    /// The daemon accepted the shutdown and will exit after draining.
    ShuttingDown,
    Sent(SendOutcome),
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or named something unknown.
    BadRequest,
    /// The daemon cannot do this (for example: `send` to a model service daemon).
    Unsupported,
    /// It tried and failed (for example: DingTalk refused the message).
    Failed,
    /// The daemon is shutting down.
    ShuttingDown,
}

/// Result of a proactive send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendOutcome {
    /// The conversation or user it went to.
    pub target: String,
    /// `session_webhook`, `group_send` or `batch_send`.
    pub route: String,
    /// DingTalk's id for the message, when it gives one.
    pub process_query_key: Option<String>,
}

/// One health check line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: CheckStatus,
    pub detail: String,
    /// One-line fix when not ok.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthReport {
    pub checks: Vec<Check>,
}
