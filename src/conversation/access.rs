//! Who may talk to the bot, and how often.
//!
//! Invariants: a refused message does not count toward the rate limit; the rate limit is
//! a sliding window per user (at most `user_rate_limit` accepted messages in any
//! `user_rate_window_secs`); memory is bounded by pruning users whose windows emptied.

use std::time::{Duration, Instant};

use crate::config::{AccessConfig, AccessPolicy, ConversationKind};
use crate::sliding_window::KeyedWindows;

/// The gate's answer; the bot maps each to a reply text (`reply.denied_text`,
/// `reply.rate_limited_text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessDecision {
    Allowed,
    Denied(DenyReason),
    /// Over the per-user limit; the oldest counted message leaves the window after `retry_after`.
    RateLimited {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenyReason {
    /// Direct chats are allowlisted and the sender is not on `allow_users`.
    UserNotAllowed,
    /// Groups are allowlisted and the conversation is not on `allow_groups`.
    GroupNotAllowed,
    /// Allowlisted direct chat without a sender id.
    UnknownSender,
}

pub(crate) struct AccessGate {
    cfg: AccessConfig,
    /// Per-user windows (idle users are pruned).
    windows: KeyedWindows,
}

impl AccessGate {
    pub(crate) fn new(cfg: &AccessConfig) -> Self {
        AccessGate {
            cfg: cfg.clone(),
            windows: KeyedWindows::new(
                cfg.user_rate_limit as usize,
                Duration::from_secs(cfg.user_rate_window_secs),
            ),
        }
    }

    /// Decides on one incoming message and, when allowed, counts it.
    pub(crate) fn check(
        &mut self,
        kind: ConversationKind,
        conversation_id: &str,
        user_id: Option<&str>,
        now: Instant,
    ) -> AccessDecision {
        if let Some(reason) = self.refusal(kind, conversation_id, user_id) {
            return AccessDecision::Denied(reason);
        }
        let (Some(user), limit) = (user_id, self.cfg.user_rate_limit) else {
            return AccessDecision::Allowed;
        };
        if limit == 0 {
            return AccessDecision::Allowed;
        }
        match self.windows.try_record(user, now) {
            Ok(()) => AccessDecision::Allowed,
            Err(retry_after) => AccessDecision::RateLimited { retry_after },
        }
    }

    fn refusal(
        &self,
        kind: ConversationKind,
        conversation_id: &str,
        user_id: Option<&str>,
    ) -> Option<DenyReason> {
        match kind {
            ConversationKind::Direct if self.cfg.direct == AccessPolicy::Allowlist => match user_id
            {
                None => Some(DenyReason::UnknownSender),
                Some(u) if !self.cfg.allow_users.iter().any(|a| a == u) => {
                    Some(DenyReason::UserNotAllowed)
                }
                Some(_) => None,
            },
            ConversationKind::Group
                if self.cfg.group == AccessPolicy::Allowlist
                    && !self.cfg.allow_groups.iter().any(|g| g == conversation_id) =>
            {
                Some(DenyReason::GroupNotAllowed)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(direct: AccessPolicy, group: AccessPolicy, rate: u32) -> AccessConfig {
        AccessConfig {
            direct,
            group,
            allow_users: vec!["alice".into()],
            allow_groups: vec!["g1".into()],
            user_rate_limit: rate,
            user_rate_window_secs: 10,
        }
    }

    #[test]
    fn allowlists() {
        let mut g = AccessGate::new(&cfg(AccessPolicy::Allowlist, AccessPolicy::Allowlist, 0));
        let t = Instant::now();
        assert_eq!(
            g.check(ConversationKind::Direct, "d", Some("alice"), t),
            AccessDecision::Allowed
        );
        assert_eq!(
            g.check(ConversationKind::Direct, "d", Some("bob"), t),
            AccessDecision::Denied(DenyReason::UserNotAllowed)
        );
        assert_eq!(
            g.check(ConversationKind::Direct, "d", None, t),
            AccessDecision::Denied(DenyReason::UnknownSender)
        );
        assert_eq!(
            g.check(ConversationKind::Group, "g1", Some("bob"), t),
            AccessDecision::Allowed
        );
        assert_eq!(
            g.check(ConversationKind::Group, "g2", Some("alice"), t),
            AccessDecision::Denied(DenyReason::GroupNotAllowed)
        );
        let mut open = AccessGate::new(&cfg(AccessPolicy::Open, AccessPolicy::Open, 0));
        assert_eq!(
            open.check(ConversationKind::Group, "g2", Some("bob"), t),
            AccessDecision::Allowed
        );
    }

    #[test]
    fn sliding_window_rate_limit() {
        let mut g = AccessGate::new(&cfg(AccessPolicy::Open, AccessPolicy::Allowlist, 2));
        let t = Instant::now();
        assert_eq!(
            g.check(ConversationKind::Direct, "d", Some("u"), t),
            AccessDecision::Allowed
        );
        // Denied messages do not count.
        assert!(matches!(
            g.check(ConversationKind::Group, "nope", Some("u"), t),
            AccessDecision::Denied(_)
        ));
        assert_eq!(
            g.check(
                ConversationKind::Direct,
                "d",
                Some("u"),
                t + Duration::from_secs(4)
            ),
            AccessDecision::Allowed
        );
        assert_eq!(
            g.check(
                ConversationKind::Direct,
                "d",
                Some("u"),
                t + Duration::from_secs(6)
            ),
            AccessDecision::RateLimited {
                retry_after: Duration::from_secs(4)
            }
        );
        assert_eq!(
            g.check(ConversationKind::Direct, "d", Some("other"), t),
            AccessDecision::Allowed
        );
        assert_eq!(
            g.check(
                ConversationKind::Direct,
                "d",
                Some("u"),
                t + Duration::from_secs(10)
            ),
            AccessDecision::Allowed
        );
    }
}
