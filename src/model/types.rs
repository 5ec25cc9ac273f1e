//! The values that cross the model API: chat messages, a turn to answer, and its outcome.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::ConversationKind;

/// Who wrote a chat message (the OpenAI `role` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the prompt sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// Length in characters (the unit of `prompt.max_chars`).
    pub fn chars(&self) -> usize {
        self.content.chars().count()
    }
}

/// Total characters of a prompt (the unit of `prompt.max_chars`).
pub fn prompt_chars(messages: &[ChatMessage]) -> usize {
    messages.iter().map(ChatMessage::chars).sum()
}

/// One message to answer. Its prompt is asked of the caller's [`super::TurnHooks`] once a
/// model slot is granted.
///
/// `arrived` is when the message reached the bot: the whole turn, queue wait included,
/// must end by `arrived + timeout_ms` of the routed model. The caller lets one turn of a
/// conversation at a time reach the router (the bot's turn-order tickets); the router's
/// limiters share model slots fairly across conversations.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The conversation; also the key the limiter is fair across.
    pub conversation_id: String,
    /// Sender staff id, used by routing rules.
    pub user_id: Option<String>,
    pub kind: ConversationKind,
    pub arrived: Instant,
    /// Time the turn already waited behind its conversation's earlier turns: it counts
    /// against `limits.queue.max_wait_ms` with the waits for a model slot.
    pub waited_in_line: Duration,
}

/// How a turn ended. `reason` strings hold classes, status codes and figures only, never
/// prompt or answer text, so they are safe to log.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    /// `model` is the config name of the model that answered; `fell_back` is true when it
    /// is not the routed one.
    Answer {
        text: String,
        model: String,
        fell_back: bool,
    },
    /// The model's queue was full or the wait for a slot ran out: nothing was sent.
    Busy,
    /// Every model tried failed; `timed_out` when the last failure was a timeout.
    Failed { reason: String, timed_out: bool },
}
