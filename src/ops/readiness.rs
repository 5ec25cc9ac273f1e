//! When the bot is ready for traffic (`GET /readyz`), judged from plain facts so the
//! rules are testable without a clock.
//!
//! Ready means: the channel is connected (stream) or listening (HTTP callback); in stream
//! mode something (a frame or a pong) arrived within [`FRAME_FRESH`]; the inbox is not
//! stuck (turns pending and none finished or started for [`INBOX_STUCK_AFTER`]); and the
//! daemon is not draining. The model's health is reported elsewhere, never required: a
//! down model means fallback replies, not "not ready".

use std::time::Duration;

/// The stream must have received something this recently.
pub(crate) const FRAME_FRESH: Duration = Duration::from_secs(60);
/// Pending turns with no progress this long mean the inbox is stuck (longer than any
/// turn's model budget plus queue wait with the default config).
pub(crate) const INBOX_STUCK_AFTER: Duration = Duration::from_secs(300);

/// The channel as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelFacts {
    /// `connecting`, `connected`, `reconnecting`, `listening` or `stopped`.
    pub(crate) state: &'static str,
    /// Stream mode (frames expected) rather than the HTTP callback.
    pub(crate) streaming: bool,
    /// Unix ms of the last frame or pong (or the connection).
    pub(crate) last_received_ms: Option<u64>,
    /// DingTalk refused the app's credentials (and never accepted them since).
    pub(crate) credentials_refused: bool,
}

/// The inbox as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InboxFacts {
    /// Turns accepted and not finished.
    pub(crate) pending: usize,
    /// Unix ms of the last turn finished, or of the first turn after an idle spell.
    pub(crate) last_progress_ms: u64,
}

/// Everything `/readyz` judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadinessFacts {
    /// `None` when no channel is configured.
    pub(crate) channel: Option<ChannelFacts>,
    pub(crate) inbox: InboxFacts,
    pub(crate) draining: bool,
    /// `host:port` of the Redis server when `state.backend: redis` and its last
    /// heartbeat failed: nothing can be accepted (no ACK) until it answers again.
    pub(crate) redis_down: Option<String>,
    /// The error kind (`OOM`, `timeout`, ...) of the shared inbox's recent intakes that
    /// failed, none succeeding since: Redis may answer the heartbeat and still take nothing.
    pub(crate) redis_intake_failing: Option<String>,
}

/// Why the bot is not ready (empty when it is), each reason one short sentence without
/// message text.
pub(crate) fn not_ready_reasons(facts: &ReadinessFacts, now_ms: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    match &facts.channel {
        None => reasons.push("no channel configured".to_string()),
        Some(ch) => {
            let up = ch.state == crate::status::channel_state::CONNECTED
                || ch.state == crate::status::channel_state::LISTENING;
            if !up && ch.credentials_refused {
                reasons.push("credentials refused".to_string());
            } else if !up {
                reasons.push(format!("channel {}", ch.state));
            } else if ch.streaming {
                let age = ch.last_received_ms.map(|t| now_ms.saturating_sub(t));
                match age {
                    Some(ms) if ms <= FRAME_FRESH.as_millis() as u64 => {}
                    Some(ms) => reasons.push(format!(
                        "nothing received on the stream for {} s",
                        ms / 1000
                    )),
                    None => reasons.push("nothing received on the stream yet".to_string()),
                }
            }
        }
    }
    let idle_ms = now_ms.saturating_sub(facts.inbox.last_progress_ms);
    if facts.inbox.pending > 0 && idle_ms > INBOX_STUCK_AFTER.as_millis() as u64 {
        reasons.push(format!(
            "inbox stuck: {} pending, none finished for {} s",
            facts.inbox.pending,
            idle_ms / 1000
        ));
    }
    if let Some(server) = &facts.redis_down {
        reasons.push(format!("redis at {server} not answering"));
    } else if let Some(kind) = &facts.redis_intake_failing {
        reasons.push(format!("redis refuses the shared inbox's intake ({kind})"));
    }
    if facts.draining {
        reasons.push("draining (shutting down)".to_string());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::channel_state::{CONNECTED, LISTENING, RECONNECTING};

    const NOW: u64 = 1_000_000_000;

    fn healthy() -> ReadinessFacts {
        ReadinessFacts {
            channel: Some(ChannelFacts {
                state: CONNECTED,
                streaming: true,
                last_received_ms: Some(NOW - 1_000),
                credentials_refused: false,
            }),
            inbox: InboxFacts {
                pending: 0,
                last_progress_ms: 0,
            },
            draining: false,
            redis_down: None,
            redis_intake_failing: None,
        }
    }

    #[test]
    fn healthy_bot_is_ready() {
        assert!(not_ready_reasons(&healthy(), NOW).is_empty());
    }

    #[test]
    fn stale_stream_is_not_ready_at_the_bound() {
        let mut f = healthy();
        let ch = f.channel.as_mut().unwrap();
        ch.last_received_ms = Some(NOW - FRAME_FRESH.as_millis() as u64);
        assert!(
            not_ready_reasons(&f, NOW).is_empty(),
            "exactly 60 s is fresh"
        );
        f.channel.as_mut().unwrap().last_received_ms =
            Some(NOW - FRAME_FRESH.as_millis() as u64 - 1);
        let r = not_ready_reasons(&f, NOW);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("nothing received"), "{r:?}");
        f.channel.as_mut().unwrap().last_received_ms = None;
        assert!(not_ready_reasons(&f, NOW)[0].contains("yet"));
    }

    #[test]
    fn http_mode_needs_no_frames() {
        let mut f = healthy();
        f.channel = Some(ChannelFacts {
            state: LISTENING,
            streaming: false,
            last_received_ms: Some(0),
            credentials_refused: false,
        });
        assert!(not_ready_reasons(&f, NOW).is_empty());
    }

    #[test]
    fn disconnected_missing_stuck_and_draining_each_say_why() {
        let mut f = healthy();
        f.channel.as_mut().unwrap().state = RECONNECTING;
        assert_eq!(not_ready_reasons(&f, NOW), vec!["channel reconnecting"]);

        // Refused credentials say so, not "connecting".
        let mut f = healthy();
        let ch = f.channel.as_mut().unwrap();
        ch.state = crate::status::channel_state::CONNECTING;
        ch.credentials_refused = true;
        assert_eq!(not_ready_reasons(&f, NOW), vec!["credentials refused"]);

        let mut f = healthy();
        f.channel = None;
        assert_eq!(not_ready_reasons(&f, NOW), vec!["no channel configured"]);

        let mut f = healthy();
        f.inbox = InboxFacts {
            pending: 3,
            last_progress_ms: NOW - INBOX_STUCK_AFTER.as_millis() as u64,
        };
        assert!(
            not_ready_reasons(&f, NOW).is_empty(),
            "at the bound: not stuck"
        );
        f.inbox.last_progress_ms -= 1;
        let r = not_ready_reasons(&f, NOW);
        assert!(r[0].starts_with("inbox stuck: 3 pending"), "{r:?}");
        f.inbox.pending = 0;
        assert!(not_ready_reasons(&f, NOW).is_empty(), "idle is not stuck");

        let mut f = healthy();
        f.draining = true;
        assert_eq!(not_ready_reasons(&f, NOW), vec!["draining (shutting down)"]);

        let mut f = healthy();
        f.redis_down = Some("10.0.0.5:6379".into());
        assert_eq!(
            not_ready_reasons(&f, NOW),
            vec!["redis at 10.0.0.5:6379 not answering"]
        );

        let mut f = healthy();
        f.redis_intake_failing = Some("OOM".into());
        assert_eq!(
            not_ready_reasons(&f, NOW),
            vec!["redis refuses the shared inbox's intake (OOM)"]
        );
    }
}
