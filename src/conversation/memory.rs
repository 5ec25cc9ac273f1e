//! Recent turns per conversation.
//!
//! Invariants: a conversation keeps at most `max_turns` user/assistant pairs (oldest
//! dropped first); a conversation idle for `idle_reset_secs` is forgotten on its next
//! access; at most `max_conversations` are kept, evicting the least recently used.
//! `max_turns == 0` or `max_conversations == 0` disables memory. The caller wraps a
//! [`Memory`] in a mutex when sharing it.
//!
//! Size bound: the stored characters of one conversation never exceed `max_chars` (the
//! prompt budget, `prompt.max_chars`: history past it could never be sent). Each stored
//! message is cut to half of it (start and end kept, see [`cut_middle`]), so the newest
//! exchange always fits; older exchanges are dropped first to make room.
//!
//! Memory per conversation: its id is one allocation shared by the map and the use order
//! (`Arc<str>`), and each exchange is one allocation holding both messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::MemoryConfig;
use crate::conversation::prompt::cut_middle;
use crate::model::ChatMessage;

/// One remembered exchange: the user's message and the answer, in one allocation.
struct Exchange {
    /// The user's message followed by the answer.
    text: Box<str>,
    /// Where the answer starts in `text` (a char boundary).
    answer_at: usize,
}

impl Exchange {
    fn new(user: &str, answer: &str) -> Exchange {
        let mut text = String::with_capacity(user.len() + answer.len());
        text.push_str(user);
        text.push_str(answer);
        Exchange {
            text: text.into_boxed_str(),
            answer_at: user.len(),
        }
    }

    fn user(&self) -> &str {
        &self.text[..self.answer_at]
    }

    fn answer(&self) -> &str {
        &self.text[self.answer_at..]
    }

    fn chars(&self) -> usize {
        self.text.chars().count()
    }
}

struct Conversation {
    turns: VecDeque<Exchange>,
    /// Characters in `turns`.
    chars: usize,
    last_used: Instant,
    /// Key into `Memory::by_use`.
    use_seq: u64,
}

pub(crate) struct Memory {
    max_turns: usize,
    /// Most characters stored per conversation.
    max_chars: usize,
    idle: Duration,
    max_conversations: usize,
    conversations: HashMap<Arc<str>, Conversation>,
    /// Use order: sequence number -> conversation id (first = least recently used); the
    /// same `Arc` as the key of `conversations`.
    by_use: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
}

impl Memory {
    /// Memory under `cfg`, storing at most `max_chars` characters per conversation.
    pub(crate) fn new(cfg: &MemoryConfig, max_chars: usize) -> Self {
        Memory {
            max_turns: cfg.max_turns,
            max_chars,
            idle: Duration::from_secs(cfg.idle_reset_secs),
            max_conversations: cfg.max_conversations,
            conversations: HashMap::new(),
            by_use: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Conversations currently remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.conversations.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    /// The remembered history as alternating user/assistant messages, oldest first.
    /// Forgets the conversation first when it was idle too long.
    pub(crate) fn history(&mut self, conversation: &str, now: Instant) -> Vec<ChatMessage> {
        self.expire(conversation, now);
        self.conversations
            .get(conversation)
            .map(|c| {
                c.turns
                    .iter()
                    .flat_map(|e| {
                        [
                            ChatMessage::user(e.user().to_string()),
                            ChatMessage::assistant(e.answer().to_string()),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers one answered turn.
    pub(crate) fn record(&mut self, conversation: &str, user: &str, assistant: &str, now: Instant) {
        if self.max_turns == 0 || self.max_conversations == 0 {
            return;
        }
        self.expire(conversation, now);
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = match self.conversations.get_key_value(conversation) {
            Some((id, _)) => Arc::clone(id),
            None => Arc::from(conversation),
        };
        let entry = self
            .conversations
            .entry(Arc::clone(&id))
            .or_insert_with(|| Conversation {
                turns: VecDeque::new(),
                chars: 0,
                last_used: now,
                use_seq: seq,
            });
        self.by_use.remove(&entry.use_seq);
        entry.use_seq = seq;
        entry.last_used = now;
        let per_message = self.max_chars / 2;
        let exchange = Exchange::new(
            &cut_middle(user, per_message),
            &cut_middle(assistant, per_message),
        );
        entry.chars += exchange.chars();
        if entry.turns.capacity() == 0 {
            // Most conversations say one thing: no room for four exchanges up front.
            entry.turns.reserve_exact(1);
        }
        entry.turns.push_back(exchange);
        while entry.turns.len() > self.max_turns || entry.chars > self.max_chars {
            let Some(dropped) = entry.turns.pop_front() else {
                break;
            };
            entry.chars -= dropped.chars();
        }
        self.by_use.insert(seq, id);
        while self.conversations.len() > self.max_conversations {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.conversations.remove(&oldest);
        }
    }

    /// Forgets one conversation (`/new`, `/reset`).
    pub(crate) fn reset(&mut self, conversation: &str) {
        if let Some(c) = self.conversations.remove(conversation) {
            self.by_use.remove(&c.use_seq);
        }
    }

    fn expire(&mut self, conversation: &str, now: Instant) {
        let idle = self
            .conversations
            .get(conversation)
            .is_some_and(|c| now.saturating_duration_since(c.last_used) >= self.idle);
        if idle {
            self.reset(conversation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(max_turns: usize, idle_reset_secs: u64, max_conversations: usize) -> Memory {
        Memory::new(
            &MemoryConfig {
                max_turns,
                idle_reset_secs,
                max_conversations,
            },
            1_000,
        )
    }

    fn stored_chars(m: &mut Memory, conversation: &str, t: Instant) -> usize {
        m.history(conversation, t)
            .iter()
            .map(ChatMessage::chars)
            .sum()
    }

    #[test]
    fn huge_answers_are_stored_bounded() {
        // Issue 10 item 7: a 1 MB answer must not be kept whole; the conversation's
        // memory stays within max_chars, the newest exchange is kept (cut in the middle).
        let mut m = mem(8, 60, 10);
        let t = Instant::now();
        m.record("c", "q0", "short", t);
        m.record("c", "q1", &"x".repeat(1_000_000), t);
        let h = m.history("c", t);
        assert!(
            stored_chars(&mut m, "c", t) <= 1_000,
            "{}",
            stored_chars(&mut m, "c", t)
        );
        assert_eq!(h.last().map(|a| a.chars()), Some(500));
        assert_eq!(h[h.len() - 2].content, "q1");
        for i in 0..50 {
            m.record(
                "c",
                &"q".repeat(300),
                &format!("a{i}{}", "y".repeat(400)),
                t,
            );
            assert!(stored_chars(&mut m, "c", t) <= 1_000);
        }
        assert!(m
            .history("c", t)
            .last()
            .is_some_and(|a| a.content.starts_with("a49")));
    }

    #[test]
    fn keeps_last_turns_in_order() {
        let mut m = mem(2, 60, 10);
        let t = Instant::now();
        for i in 0..3 {
            m.record("c", &format!("q{i}"), &format!("a{i}"), t);
        }
        let h = m.history("c", t);
        let texts: Vec<&str> = h.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["q1", "a1", "q2", "a2"]);
    }

    #[test]
    fn idle_reset_lru_and_manual_reset() {
        let mut m = mem(4, 10, 2);
        let t = Instant::now();
        m.record("a", "q", "a", t);
        m.record("b", "q", "a", t);
        assert_eq!(
            m.history("a", t + Duration::from_secs(11)).len(),
            0,
            "idle reset"
        );
        m.record("b", "q2", "a2", t);
        m.record("c", "q", "a", t);
        m.record("d", "q", "a", t);
        assert_eq!(m.len(), 2);
        assert!(m.history("b", t).is_empty(), "least recently used evicted");
        assert_eq!(m.history("d", t).len(), 2);
        m.reset("d");
        assert!(m.history("d", t).is_empty());
        let mut off = mem(0, 10, 2);
        off.record("a", "q", "a", t);
        assert!(off.is_empty());
    }

    /// Each id is one allocation shared by the map and the use order, the two stay in
    /// step through eviction, idle reset and `/reset`, and an exchange stored as one
    /// string comes back as the same two messages.
    #[test]
    fn ids_are_stored_once_and_the_use_order_stays_in_step() {
        let mut m = mem(2, 10, 100);
        let t = Instant::now();
        for i in 0..250 {
            m.record(&format!("c{i}"), "q", "a", t);
        }
        m.record("c150", "héllo", "wörld ✓", t);
        assert_eq!((m.len(), m.by_use.len()), (100, 100));
        for id in m.conversations.keys() {
            assert_eq!(Arc::strong_count(id), 2, "{id}: one shared allocation");
        }
        m.record("new", "q", "a", t);
        assert!(
            m.history("c151", t).is_empty(),
            "least recently used evicted"
        );
        let texts: Vec<String> = m
            .history("c150", t)
            .into_iter()
            .map(|c| c.content)
            .collect();
        assert_eq!(texts, ["q", "a", "héllo", "wörld ✓"]);
        assert!(
            m.history("c152", t + Duration::from_secs(10)).is_empty(),
            "idle"
        );
        m.reset("c153");
        assert_eq!((m.len(), m.by_use.len()), (98, 98));
    }
}
