//! Recent turns per conversation.
//!
//! Invariants: a conversation keeps at most `max_turns` user/assistant pairs (oldest
//! dropped first); a conversation idle for `idle_reset_secs` is forgotten on its next
//! access; at most `max_conversations` are kept: when a new one would pass that, the least
//! recently used [`EVICT_SHARE`]th of them (at least one) are forgotten together, so the
//! search for them (a pass over the map) is paid once per that many arrivals, not on each.
//! `max_turns == 0` or `max_conversations == 0` disables memory. The caller wraps a
//! [`Memory`] in a mutex when sharing it.
//!
//! Size bound: the stored characters of one conversation never exceed `max_chars` (the
//! prompt budget, `prompt.max_chars`: history past it could never be sent). Each stored
//! message is cut to half of it (start and end kept, see [`cut_middle`]), so the newest
//! exchange always fits; older exchanges are dropped first to make room.
//!
//! Memory per conversation (issue 12, RSS at 10 000 conversations): one map entry of 56
//! bytes (the id's pointer, the turns' vector, two stamps), the id's own allocation and one
//! allocation per exchange holding both messages. There is no second index for the use
//! order (a `BTreeMap` of 10 000 ids was ~45 bytes a conversation), and the use stamp is a
//! sequence number in the entry itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::clock::{millis, MonoMillis};
use crate::config::MemoryConfig;
use crate::conversation::prompt::cut_middle;
use crate::model::ChatMessage;

/// When full, the least recently used `1/EVICT_SHARE` of `max_conversations` go at once.
const EVICT_SHARE: usize = 32;

/// One remembered exchange: the user's message and the answer, in one allocation.
struct Exchange {
    /// The user's message followed by the answer.
    text: Box<str>,
    /// Where the answer starts in `text` (a char boundary).
    answer_at: u32,
    /// Characters in `text` (at most `max_chars`, which `cut_middle` keeps each half to).
    chars: u32,
}

impl Exchange {
    fn new(user: &str, answer: &str) -> Exchange {
        let mut text = String::with_capacity(user.len() + answer.len());
        text.push_str(user);
        text.push_str(answer);
        Exchange {
            chars: saturating_u32(text.chars().count()),
            text: text.into_boxed_str(),
            answer_at: saturating_u32(user.len()),
        }
    }

    fn user(&self) -> &str {
        &self.text[..self.answer_at as usize]
    }

    fn answer(&self) -> &str {
        &self.text[self.answer_at as usize..]
    }
}

/// `n` as a u32: message parts are cut to `max_chars / 2` characters before they get here,
/// far below 4 GiB; saturating keeps a sum wrong rather than a slice out of bounds.
fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Conversation {
    /// Oldest first; at most `max_turns` (a handful), so dropping the front moves few.
    turns: Vec<Exchange>,
    /// The `Memory::clock` stamp of the last use (for the idle reset).
    last_used_ms: u64,
    /// The `Memory::next_seq` of the last use: the least recently used has the lowest.
    use_seq: u64,
}

impl Conversation {
    fn chars(&self) -> usize {
        self.turns.iter().map(|e| e.chars as usize).sum()
    }
}

pub(crate) struct Memory {
    max_turns: usize,
    /// Most characters stored per conversation.
    max_chars: usize,
    /// `idle_reset_secs` in milliseconds.
    idle_ms: u64,
    max_conversations: usize,
    conversations: HashMap<Box<str>, Conversation>,
    /// The clock of the `last_used_ms` stamps.
    clock: MonoMillis,
    next_seq: u64,
}

impl Memory {
    /// Memory under `cfg`, storing at most `max_chars` characters per conversation.
    pub(crate) fn new(cfg: &MemoryConfig, max_chars: usize) -> Self {
        Memory {
            max_turns: cfg.max_turns,
            max_chars,
            idle_ms: millis(Duration::from_secs(cfg.idle_reset_secs)),
            max_conversations: cfg.max_conversations,
            conversations: HashMap::new(),
            clock: MonoMillis::new(),
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
        if !self.conversations.contains_key(conversation) {
            self.make_room();
        }
        let (stamp, seq) = (self.clock.stamp(now), self.next_seq);
        self.next_seq += 1;
        let entry = match self.conversations.get_mut(conversation) {
            Some(entry) => entry,
            None => self
                .conversations
                .entry(Box::from(conversation))
                .or_insert_with(|| Conversation {
                    // Most conversations say one thing: room for one exchange, not four.
                    turns: Vec::with_capacity(1),
                    last_used_ms: stamp,
                    use_seq: seq,
                }),
        };
        entry.last_used_ms = stamp;
        entry.use_seq = seq;
        let per_message = self.max_chars / 2;
        entry.turns.push(Exchange::new(
            &cut_middle(user, per_message),
            &cut_middle(assistant, per_message),
        ));
        let mut chars = entry.chars();
        while entry.turns.len() > self.max_turns || chars > self.max_chars {
            if entry.turns.is_empty() {
                break;
            }
            chars -= entry.turns.remove(0).chars as usize;
        }
    }

    /// Forgets one conversation (`/new`, `/reset`).
    pub(crate) fn reset(&mut self, conversation: &str) {
        self.conversations.remove(conversation);
    }

    fn expire(&mut self, conversation: &str, now: Instant) {
        let now_ms = self.clock.stamp(now);
        let idle = self
            .conversations
            .get(conversation)
            .is_some_and(|c| now_ms.saturating_sub(c.last_used_ms) >= self.idle_ms);
        if idle {
            self.reset(conversation);
        }
    }

    /// When the map is full, forgets its least recently used share (see the module doc).
    fn make_room(&mut self) {
        if self.conversations.len() < self.max_conversations {
            return;
        }
        let excess = self.conversations.len() + 1 - self.max_conversations;
        let batch = (self.max_conversations / EVICT_SHARE)
            .max(excess)
            .min(self.conversations.len());
        let mut seqs: Vec<u64> = self.conversations.values().map(|c| c.use_seq).collect();
        // Sequence numbers are unique: exactly `batch` of them are at or below the cut.
        let (_, &mut cut, _) = seqs.select_nth_unstable(batch - 1);
        self.conversations.retain(|_, c| c.use_seq > cut);
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

    /// When full, the least recently used share goes at once and nothing else: the
    /// conversations used since (even ones first seen early) stay, the count never passes
    /// the bound, and an exchange stored as one string comes back as the same two messages.
    #[test]
    fn a_full_memory_forgets_its_least_recently_used_share_at_once() {
        let max = 320;
        let share = max / EVICT_SHARE;
        let mut m = mem(2, 10, max);
        let t = Instant::now();
        for i in 0..max {
            m.record(&format!("c{i}"), "q", "a", t);
        }
        // c0..c4 are used again: they are now the most recently used.
        for i in 0..5 {
            m.record(&format!("c{i}"), "héllo", "wörld ✓", t);
        }
        assert_eq!(m.len(), max);
        m.record("new", "q", "a", t);
        assert_eq!(
            m.len(),
            max - share + 1,
            "one share forgotten, then one added"
        );
        for i in 0..5 {
            assert_eq!(
                m.history(&format!("c{i}"), t).len(),
                4,
                "c{i} was used lately"
            );
        }
        for i in 5..5 + share {
            assert!(
                m.history(&format!("c{i}"), t).is_empty(),
                "c{i} is the oldest"
            );
        }
        assert_eq!(m.history(&format!("c{}", 5 + share), t).len(), 2);
        let texts: Vec<String> = m.history("c3", t).into_iter().map(|c| c.content).collect();
        assert_eq!(texts, ["q", "a", "héllo", "wörld ✓"]);
        for i in 0..10 * max {
            m.record(&format!("more{i}"), "q", "a", t);
            assert!(m.len() <= max, "{} kept past the bound {max}", m.len());
        }
        m.reset("new");
        assert!(m.history("new", t).is_empty());
    }
}
