//! Builds the messages sent to the model: the policy system prompt (or the conversation's
//! override), remembered history, and the new message, within `prompt.max_chars`.
//!
//! Invariant: the characters of all returned messages add up to at most `max_chars`.
//! Trimming order: drop history oldest first (history never starts with an assistant
//! message); then cut the new message in the middle, keeping its start and end around
//! [`CUT_MARKER`]; the system prompt is cut only when it alone would leave the message
//! less than half the budget.

use crate::config::PolicyConfig;
use crate::model::{ChatMessage, Role};

/// Replaces the middle of a cut text.
pub(crate) const CUT_MARKER: &str = "\n[…]\n";

/// The built prompt and what trimming did (figures only, safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub(crate) messages: Vec<ChatMessage>,
    /// History messages left out.
    pub(crate) dropped_history: usize,
    /// Characters removed from the system prompt and the new message.
    pub(crate) cut_chars: usize,
}

#[cfg(test)]
impl Prompt {
    fn chars(&self) -> usize {
        crate::model::prompt_chars(&self.messages)
    }
}

/// The system prompt for a conversation: its override, else the default policy prompt.
pub(crate) fn system_prompt<'a>(policy: &'a PolicyConfig, conversation_id: &str) -> &'a str {
    policy
        .conversation_prompts
        .get(conversation_id)
        .unwrap_or(&policy.system_prompt)
}

pub(crate) fn build_prompt(
    policy: &PolicyConfig,
    max_chars: usize,
    conversation_id: &str,
    history: &[ChatMessage],
    user_text: &str,
) -> Prompt {
    let mut system = system_prompt(policy, conversation_id).to_string();
    let mut user = user_text.to_string();
    let mut cut_chars = 0;
    let user_len = user.chars().count();
    let sys_len = system.chars().count();
    if sys_len + user_len > max_chars {
        let user_floor = user_len.min(max_chars / 2);
        let sys_allowed = max_chars - user_floor;
        if sys_len > sys_allowed {
            system = cut_middle(&system, sys_allowed);
            cut_chars += sys_len - system.chars().count();
        }
        let user_allowed = max_chars - system.chars().count();
        user = cut_middle(&user, user_allowed);
        cut_chars += user_len - user.chars().count();
    }
    let mut room = max_chars.saturating_sub(system.chars().count() + user.chars().count());
    let mut kept = Vec::new();
    for msg in history.iter().rev() {
        let len = msg.chars();
        if len > room {
            break;
        }
        room -= len;
        kept.push(msg.clone());
    }
    kept.reverse();
    while kept.first().is_some_and(|m| m.role != Role::User) {
        kept.remove(0);
    }
    let dropped_history = history.len() - kept.len();
    let mut messages = Vec::with_capacity(kept.len() + 2);
    if !system.is_empty() {
        messages.push(ChatMessage::system(system));
    }
    messages.extend(kept);
    messages.push(ChatMessage::user(user));
    Prompt {
        messages,
        dropped_history,
        cut_chars,
    }
}

/// Shortens `text` to at most `limit` characters, keeping its start and end around
/// [`CUT_MARKER`] (or just the start when `limit` is too small for the marker).
pub(crate) fn cut_middle(text: &str, limit: usize) -> String {
    let len = text.chars().count();
    if len <= limit {
        return text.to_string();
    }
    let marker_len = CUT_MARKER.chars().count();
    if limit <= marker_len * 2 {
        return text.chars().take(limit).collect();
    }
    let keep = limit - marker_len;
    let tail = keep / 3;
    let head = keep - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push_str(CUT_MARKER);
    out.extend(text.chars().skip(len - tail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(system: &str) -> PolicyConfig {
        let mut conversation_prompts = BTreeMap::new();
        conversation_prompts.insert("special".to_string(), "Override.".to_string());
        PolicyConfig {
            system_prompt: system.to_string(),
            conversation_prompts,
        }
    }

    fn history(n: usize) -> Vec<ChatMessage> {
        (0..n)
            .flat_map(|i| {
                [
                    ChatMessage::user(format!("question {i:02}")),
                    ChatMessage::assistant(format!("answer {i:02}")),
                ]
            })
            .collect()
    }

    #[test]
    fn fits_without_trimming() {
        let p = build_prompt(&policy("Be brief."), 1000, "c", &history(2), "hi");
        assert_eq!(p.messages.len(), 6);
        assert_eq!(p.messages[0], ChatMessage::system("Be brief."));
        assert_eq!(p.messages[5], ChatMessage::user("hi"));
        assert_eq!((p.dropped_history, p.cut_chars), (0, 0));
        let o = build_prompt(&policy("Be brief."), 1000, "special", &[], "hi");
        assert_eq!(o.messages[0].content, "Override.");
    }

    #[test]
    fn drops_oldest_history_first_and_starts_with_user() {
        // system 9 + user 2 = 11; each history message is 11 chars ("question 00") or 9.
        let p = build_prompt(
            &policy("Be brief."),
            11 + 9 + 11 + 9,
            "c",
            &history(3),
            "hi",
        );
        assert!(p.chars() <= 40);
        assert_eq!(p.messages[1].role, Role::User);
        assert_eq!(p.messages[1].content, "question 02");
        assert_eq!(p.dropped_history, 4);
    }

    #[test]
    fn cuts_message_keeping_start_and_end() {
        let long = format!("START{}END", "x".repeat(5000));
        let p = build_prompt(&policy("Be brief."), 200, "c", &history(3), &long);
        assert!(p.chars() <= 200, "{}", p.chars());
        let user = &p.messages.last().unwrap().content;
        assert!(user.starts_with("START") && user.ends_with("END") && user.contains(CUT_MARKER));
        assert_eq!(p.dropped_history, 6);
    }

    #[test]
    fn never_exceeds_budget_even_with_huge_system_prompt() {
        for max in [0, 1, 5, 12, 50, 300] {
            let p = build_prompt(
                &policy(&"s".repeat(1000)),
                max,
                "c",
                &history(2),
                &"u".repeat(1000),
            );
            assert!(p.chars() <= max, "max {max}: {}", p.chars());
        }
        assert_eq!(cut_middle("héllo wörld", 100), "héllo wörld");
    }
}
