//! The bot's view of per-conversation state: access decisions, memory and prompt
//! building, behind one lock each (short critical sections, no await inside).

use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;
use crate::conversation::access::{AccessDecision, AccessGate};
use crate::conversation::memory::Memory;
use crate::conversation::prompt::build_prompt;
use crate::dingtalk::Inbound;
use crate::model::ChatMessage;

/// What the access policy says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Allowed,
    Denied,
    RateLimited,
}

pub(crate) struct Conversations {
    access: Mutex<AccessGate>,
    memory: Mutex<Memory>,
}

impl Conversations {
    pub(crate) fn new(cfg: &Config) -> Conversations {
        Conversations {
            access: Mutex::new(AccessGate::new(&cfg.access)),
            memory: Mutex::new(Memory::new(&cfg.memory, cfg.prompt.max_chars)),
        }
    }

    /// Applies a reloaded config: the access gate is rebuilt (rate windows restart);
    /// memory is rebuilt only when its limits changed, so conversations keep their history.
    pub(crate) fn reconfigure(&self, old: &Config, new: &Config) {
        *self.access.lock().unwrap_or_else(|p| p.into_inner()) = AccessGate::new(&new.access);
        if old.memory != new.memory || old.prompt.max_chars != new.prompt.max_chars {
            *self.memory.lock().unwrap_or_else(|p| p.into_inner()) =
                Memory::new(&new.memory, new.prompt.max_chars);
        }
    }

    pub(crate) fn admit(&self, msg: &Inbound) -> Admission {
        let mut gate = self.access.lock().unwrap_or_else(|p| p.into_inner());
        let user = msg
            .sender_staff_id
            .as_deref()
            .or(Some(msg.sender_id.as_str()))
            .filter(|u| !u.is_empty());
        match gate.check(
            msg.conversation_kind,
            &msg.conversation_id,
            user,
            Instant::now(),
        ) {
            AccessDecision::Allowed => Admission::Allowed,
            AccessDecision::Denied(reason) => {
                tracing::info!(msg_id = %msg.msg_id, ?reason, "message refused by access policy");
                Admission::Denied
            }
            AccessDecision::RateLimited { retry_after } => {
                tracing::info!(msg_id = %msg.msg_id, retry_after_ms = retry_after.as_millis() as u64, "user rate limited");
                Admission::RateLimited
            }
        }
    }

    /// Replaces `conversation`'s memory with `exchanges` (oldest first), bounded as any
    /// recorded exchange is: the shared memory a replica loads when the turn is its.
    pub(crate) fn load_history(&self, conversation: &str, exchanges: &[(String, String)]) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.reset(conversation);
        let now = Instant::now();
        for (user, answer) in exchanges {
            memory.record(conversation, user, answer, now);
        }
    }

    pub(crate) fn reset(&self, conversation: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset(conversation);
    }

    /// The trimmed prompt for a new message in `conversation`.
    pub(crate) fn prompt(&self, cfg: &Config, conversation: &str, text: &str) -> Vec<ChatMessage> {
        let history = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .history(conversation, Instant::now());
        let prompt = build_prompt(
            &cfg.policy,
            cfg.prompt.max_chars,
            conversation,
            &history,
            text,
        );
        if prompt.dropped_history > 0 || prompt.cut_chars > 0 {
            tracing::info!(
                conversation,
                dropped_history = prompt.dropped_history,
                cut_chars = prompt.cut_chars,
                "prompt trimmed to prompt.max_chars"
            );
        }
        prompt.messages
    }

    pub(crate) fn remember(&self, conversation: &str, user: &str, answer: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(conversation, user, answer, Instant::now());
    }
}
