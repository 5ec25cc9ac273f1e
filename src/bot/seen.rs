//! The conversations the bot has seen recently, for `clawdbot conversations`: an operator
//! learns conversation ids here to write target aliases and allowlists.
//!
//! Invariants: at most [`MAX_SEEN_CONVERSATIONS`] entries are kept (the one with the oldest
//! activity is forgotten first); only ids, kinds, group titles, counts and times are kept,
//! never message text or senders.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::dingtalk::Inbound;
use crate::ipc::proto::SeenConversation;

/// Conversations remembered at most (memory stays bounded whatever DingTalk sends).
pub(crate) const MAX_SEEN_CONVERSATIONS: usize = 200;

#[derive(Default)]
pub(crate) struct SeenConversations {
    by_id: Mutex<HashMap<String, SeenConversation>>,
}

impl SeenConversations {
    /// Notes a message's conversation (its id, kind, title and arrival time).
    pub(crate) fn record(&self, msg: &Inbound) {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = by_id.get_mut(&msg.conversation_id) {
            seen.messages += 1;
            seen.last_activity_ms = seen.last_activity_ms.max(msg.received_at_ms);
            if msg.conversation_title.is_some() {
                seen.title = msg.conversation_title.clone();
            }
            return;
        }
        if by_id.len() >= MAX_SEEN_CONVERSATIONS {
            let oldest = by_id
                .values()
                .min_by_key(|s| s.last_activity_ms)
                .map(|s| s.id.clone());
            if let Some(oldest) = oldest {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(
            msg.conversation_id.clone(),
            SeenConversation {
                id: msg.conversation_id.clone(),
                kind: msg.conversation_kind,
                title: msg.conversation_title.clone(),
                last_activity_ms: msg.received_at_ms,
                messages: 1,
            },
        );
    }

    /// Up to `limit` conversations, the most recently active first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<SeenConversation> {
        let by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<SeenConversation> = by_id.values().cloned().collect();
        all.sort_by(|a, b| {
            b.last_activity_ms
                .cmp(&a.last_activity_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConversationKind;
    use crate::dingtalk::InboundContent;

    fn msg(id: &str, at: u64, title: Option<&str>) -> Inbound {
        Inbound {
            msg_id: format!("m{at}"),
            conversation_id: id.into(),
            conversation_kind: if title.is_some() {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            conversation_title: title.map(str::to_string),
            sender_id: "s".into(),
            sender_staff_id: None,
            sender_nick: "nick".into(),
            content: InboundContent::Text("secret words".into()),
            session_webhook: None,
            session_webhook_expires_ms: None,
            received_at_ms: at,
            read_at: None,
            durable: Default::default(),
        }
    }

    #[test]
    fn most_recent_first_with_counts_and_the_latest_title() {
        let seen = SeenConversations::default();
        seen.record(&msg("cidA", 10, Some("Old name")));
        seen.record(&msg("cidB", 20, None));
        seen.record(&msg("cidA", 30, Some("New name")));
        let list = seen.recent(10);
        let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["cidA", "cidB"]);
        assert_eq!(list[0].messages, 2);
        assert_eq!(list[0].title.as_deref(), Some("New name"));
        assert_eq!(list[0].last_activity_ms, 30);
        assert_eq!(list[1].kind, ConversationKind::Direct);
        assert_eq!(seen.recent(1).len(), 1);
    }

    #[test]
    fn stays_bounded_and_forgets_the_least_recently_active() {
        let seen = SeenConversations::default();
        for i in 0..(MAX_SEEN_CONVERSATIONS as u64 + 50) {
            seen.record(&msg(&format!("cid{i}"), 1000 + i, None));
        }
        // cid0..cid49 were forgotten; cid50, the oldest left, is active again, so the
        // next new conversation pushes out cid51 instead.
        seen.record(&msg("cid50", 5000, None));
        seen.record(&msg("late", 6000, None));
        let list = seen.recent(usize::MAX);
        assert_eq!(list.len(), MAX_SEEN_CONVERSATIONS);
        assert_eq!(list[0].id, "late");
        assert_eq!(list[1].id, "cid50");
        let kept = |id: &str| list.iter().any(|s| s.id == id);
        assert!(!kept("cid49") && !kept("cid51"));
        assert!(kept("cid52") && kept("cid249"));
    }
}
