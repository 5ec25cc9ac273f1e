//! What can go wrong talking to a model, and what each failure means for the caller:
//! whether a fallback model may take over, and whether it counts as a timeout.
//!
//! Display texts carry classes, status codes and the server's error `type`/`code` only.
//! The server's free-text message can echo user input, so it is kept apart in
//! [`ModelError::detail`] and never shown by `Display`.

use std::fmt;

/// Which part of the time budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// TCP (and TLS) connect.
    Connect,
    /// From sending the request to the first content token.
    FirstToken,
    /// Silence between two streamed chunks (SSE comments/pings do not count as chunks).
    Idle,
    /// The turn's total budget, measured from the message's arrival.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstToken => "first token",
            TimeoutPhase::Idle => "idle between chunks",
            TimeoutPhase::Total => "total",
        })
    }
}

/// An error body from the server, reduced to what is safe to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// The `error.type` field, or empty.
    pub kind: String,
    /// The `error.code` field rendered as text (int, string or absent).
    pub code: String,
    /// The free-text message (may echo user input: never log it).
    pub message: String,
}

impl ServerError {
    /// ` (type=... code=...)`, omitting empty parts; empty when both are empty. Each
    /// field is shown only when it looks like an identifier (see [`shown`]).
    pub(crate) fn label(&self) -> String {
        let mut parts = Vec::new();
        if !self.kind.is_empty() {
            parts.push(format!("type={}", shown(&self.kind)));
        }
        if !self.code.is_empty() {
            parts.push(format!("code={}", shown(&self.code)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(" "))
        }
    }
}

/// Longest `type` or `code` shown as the server sent it.
const MAX_SHOWN_FIELD_CHARS: usize = 64;

/// A server's `type` or `code` as shown in errors (and so in logs and status): as sent
/// when it is an identifier (`rate_limit_error`, `429`, `context_length_exceeded`: at
/// most [`MAX_SHOWN_FIELD_CHARS`] letters, digits and `_ - . : /`), else only its length.
/// The fields are meant to be classes, but a server that echoes its input into them (or
/// a hostile one) would otherwise put any text, of any length, into the log.
fn shown(field: &str) -> std::borrow::Cow<'_, str> {
    let identifier = field.len() <= MAX_SHOWN_FIELD_CHARS
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if identifier {
        field.into()
    } else {
        format!("<{} chars, not shown>", field.chars().count()).into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Could not open a connection (refused, DNS, TLS...).
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out ({0} budget)")]
    Timeout(TimeoutPhase),
    /// The prompt does not fit the model's context (HTTP 400/413 with a context error).
    #[error("prompt exceeds the model's context{}", .0.label())]
    ContextOverflow(ServerError),
    /// HTTP 401/403: the API key is wrong or missing.
    #[error("HTTP {status}: authentication failed{}", error.label())]
    Auth { status: u16, error: ServerError },
    /// Any other HTTP error status.
    #[error("HTTP {status}{}{}", error.label(), status_hint(*status))]
    Http { status: u16, error: ServerError },
    /// The stream broke: an error event inside it, an end without `[DONE]` or
    /// `finish_reason`, an aborted connection, or an undecodable chunk.
    #[error("broken stream: {0}")]
    Stream(String),
    /// A 200 with nothing in it (no chunk, no body).
    #[error("empty response (200 with no data)")]
    Empty,
    /// The answer held no visible text.
    #[error("the answer was empty")]
    EmptyAnswer,
    /// A 200 whose body is not a chat completion.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The turn's global slot lease ended while it ran (this process paused, or Redis
    /// unreachable, longer than `state.redis.lease_ms`, or Redis lost its data) and the
    /// slot was taken by another replica: the request was
    /// cancelled so the model's global limit holds.
    #[error("global model slot lost: the lease expired while this process was paused or Redis lost it (state.redis.lease_ms); request cancelled")]
    LeaseLost,
}

/// The usual 404 is a base_url without the API prefix (`http://h:8000` for
/// `http://h:8000/v1`): say so, since the bare status tells a newcomer nothing.
fn status_hint(status: u16) -> &'static str {
    match status {
        300..=399 => {
            ": a redirect, which is not followed (set base_url to the URL it redirects to)"
        }
        404 => ": not found (does base_url need /v1? is the model one the server serves?)",
        _ => "",
    }
}

impl ModelError {
    /// True when another model may succeed where this one failed: timeouts, connect
    /// errors, 429, 5xx (503 "Loading model" included), broken or empty streams.
    /// Context overflow, auth and other 4xx are the request's or config's fault.
    pub fn failover_eligible(&self) -> bool {
        match self {
            ModelError::Connect(_)
            | ModelError::Timeout(_)
            | ModelError::Stream(_)
            | ModelError::Empty
            | ModelError::EmptyAnswer
            | ModelError::Protocol(_) => true,
            ModelError::Http { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            ModelError::ContextOverflow(_) | ModelError::Auth { .. } | ModelError::LeaseLost => {
                false
            }
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, ModelError::Timeout(_))
    }

    /// True when no connection to the server could be made: refused, no route, DNS, or
    /// the connect phase timed out. The server was never asked anything.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ModelError::Connect(_) | ModelError::Timeout(TimeoutPhase::Connect)
        )
    }

    /// The server's free-text message when there is one. May echo user input.
    pub fn detail(&self) -> Option<&str> {
        match self {
            ModelError::ContextOverflow(e)
            | ModelError::Auth { error: e, .. }
            | ModelError::Http { error: e, .. } => {
                Some(e.message.as_str()).filter(|m| !m.is_empty())
            }
            _ => None,
        }
    }
}
