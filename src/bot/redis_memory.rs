//! Conversation memory shared by the replicas (`state.backend: redis`).
//!
//! Each conversation's remembered exchanges are one Redis list `memory:{conversation}` of
//! JSON `[user, assistant]` pairs, oldest first. The local [`Memory`](crate::conversation::memory)
//! stays the one place that bounds and trims history and builds prompts: a turn loads the
//! list into it when its turn came (the conversation's line guarantees no other replica
//! writes the list meanwhile) and appends its exchange before the turn ends.
//!
//! Invariants:
//! - bounded like the local memory: at most `memory.max_turns` pairs (`LTRIM` in the same
//!   transaction as the `RPUSH`), each message cut to half of `prompt.max_chars` before it
//!   is stored; nothing is stored when memory is off;
//! - idle reset like the local memory: every append sets the list's expiry to
//!   `memory.idle_reset_secs`, so a conversation quiet that long is forgotten by Redis
//!   itself (`memory.max_conversations` is a per-process bound and does not apply here:
//!   the expiry bounds what idle conversations cost);
//! - a Redis error never fails a turn: the turn goes on with the memory this replica
//!   has, and the error is logged (never the text).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::Config;
use crate::conversation::prompt::cut_middle;
use crate::state::redis::{RedisError, RedisState};

/// The shared memory of one replica.
pub(crate) struct RedisMemory {
    redis: RedisState,
    /// Exchanges answered and not yet appended, by conversation (the model hook that
    /// records them cannot wait for Redis).
    staged: Mutex<HashMap<String, (String, String)>>,
}

impl RedisMemory {
    pub(crate) fn new(redis: RedisState) -> RedisMemory {
        RedisMemory {
            redis,
            staged: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, conversation: &str) -> String {
        self.redis.key(&["memory", conversation])
    }

    /// The remembered exchanges of `conversation`, oldest first (unreadable ones skipped).
    pub(crate) async fn load(
        &self,
        conversation: &str,
    ) -> Result<Vec<(String, String)>, RedisError> {
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(self.key(conversation))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok(items
            .iter()
            .filter_map(|i| serde_json::from_str::<(String, String)>(i).ok())
            .collect())
    }

    /// Keeps an answered exchange until [`RedisMemory::flush`].
    pub(crate) fn stage(&self, conversation: &str, user: &str, assistant: &str) {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                conversation.to_string(),
                (user.to_string(), assistant.to_string()),
            );
    }

    /// Appends the exchange staged for `conversation`, if any (bounded, with the idle
    /// expiry); a failure is logged and the exchange dropped.
    pub(crate) async fn flush(&self, cfg: &Config, conversation: &str) {
        let staged = self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation);
        let Some((user, assistant)) = staged else {
            return;
        };
        let m = &cfg.memory;
        if m.max_turns == 0 || m.max_conversations == 0 {
            return;
        }
        let half = cfg.prompt.max_chars / 2;
        let item = serde_json::json!([cut_middle(&user, half), cut_middle(&assistant, half)]);
        let key = self.key(conversation);
        let keep = isize::try_from(m.max_turns).unwrap_or(isize::MAX);
        let appended: Result<(), redis::RedisError> = redis::pipe()
            .atomic()
            .rpush(&key, item.to_string())
            .ignore()
            .ltrim(&key, -keep, -1)
            .ignore()
            .expire(&key, i64::try_from(m.idle_reset_secs).unwrap_or(i64::MAX))
            .ignore()
            .query_async(&mut self.redis.conn())
            .await;
        if let Err(e) = appended {
            tracing::warn!(conversation, error = %self.redis.error(e), "exchange not remembered in Redis");
        }
    }

    /// Drops the exchange staged for `conversation` (its reply went to another replica).
    pub(crate) fn flush_discard(&self, conversation: &str) {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation);
    }

    /// Forgets `conversation` (`/new`, `/reset`).
    pub(crate) async fn reset(&self, conversation: &str) {
        let deleted: Result<(), redis::RedisError> = redis::cmd("DEL")
            .arg(self.key(conversation))
            .query_async(&mut self.redis.conn())
            .await;
        if let Err(e) = deleted {
            tracing::warn!(conversation, error = %self.redis.error(e), "conversation not forgotten in Redis");
        }
    }
}
