//! Replies DingTalk did not take during their turn are retried by the running daemon:
//! a bounded number of tries with capped exponential backoff ([`crate::backoff`]), then
//! `reply.undelivered_text` is sent instead (also a bounded number of tries).
//!
//! Invariants:
//! - nothing retries forever: at most `attempts` answer tries and [`SORRY_ATTEMPTS`]
//!   sorry tries, each after a wait drawn between half and all of `first_delay · 2^n`
//!   (at most [`MAX_DELAY`]): the replies a flood left undelivered, which failed
//!   together, are retried spread out, not in lockstep bursts with silence between;
//! - every step is logged with the message id (never text);
//! - the outcome says what the caller may do with the inbox entry: complete it when
//!   something was delivered, keep it for the next start when nothing was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backoff::capped_doubling;
use crate::config::ReplyConfig;
use crate::dingtalk::{Channel, ChannelError, Inbound, OutgoingReply};
use crate::status::DeliveryReport;

/// Longest wait between two tries.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(60);
/// Tries of `undelivered_text` once the answer was given up on.
pub(crate) const SORRY_ATTEMPTS: u32 = 2;

/// How often and how patiently an undelivered reply is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedeliveryPolicy {
    /// Answer tries after the turn's own (0 = straight to the sorry text).
    pub(crate) attempts: u32,
    /// Wait before the first try; doubles per try, capped at [`MAX_DELAY`].
    pub(crate) first_delay: Duration,
}

impl RedeliveryPolicy {
    pub(crate) fn from_config(reply: &ReplyConfig) -> RedeliveryPolicy {
        RedeliveryPolicy {
            attempts: reply.redelivery_attempts,
            first_delay: Duration::from_millis(reply.redelivery_delay_ms),
        }
    }

    /// The wait before try `n` (0-based, answer tries first, then sorry tries).
    fn delay(&self, n: u32) -> Duration {
        capped_doubling(self.first_delay, MAX_DELAY, n)
    }

    /// [`delay`](Self::delay) `n`, less a random part of at most half of it.
    pub(crate) fn spread_delay(&self, n: u32) -> Duration {
        let full = self.delay(n);
        full - full.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// A reply to deliver late: the answer (resuming after the parts already sent) or,
/// once given up on, the sorry text.
pub(crate) trait Redeliverable {
    fn msg_id(&self) -> &str;
    async fn send_answer(&mut self) -> Result<(), ChannelError>;
    async fn send_sorry(&mut self) -> Result<(), ChannelError>;
}

/// The product's [`Redeliverable`]: the rest of an answer to `msg`, or the sorry text.
pub(crate) struct LateReply {
    pub(crate) channel: Channel,
    pub(crate) msg: Inbound,
    pub(crate) answer: OutgoingReply,
    pub(crate) sorry: OutgoingReply,
}

impl Redeliverable for LateReply {
    fn msg_id(&self) -> &str {
        &self.msg.msg_id
    }
    /// Each try ends within the channel's delivery limit (see [`Channel::reply_parts`]).
    async fn send_answer(&mut self) -> Result<(), ChannelError> {
        self.channel.reply_parts(&self.msg, &mut self.answer).await
    }
    async fn send_sorry(&mut self) -> Result<(), ChannelError> {
        self.channel.reply_parts(&self.msg, &mut self.sorry).await
    }
}

/// How a redelivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The answer went out on retry `attempt` (1-based).
    Answered { attempt: u32 },
    /// The answer never went out; the sorry text did.
    SorrySent,
    /// Nothing went out: the message stays pending for the next start.
    Undelivered,
}

impl Settled {
    /// Something reached the user: the inbox entry may be completed.
    pub(crate) fn delivered(self) -> bool {
        !matches!(self, Settled::Undelivered)
    }
}

/// Live counts for `daemon status`.
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    retrying: AtomicU64,
    redelivered: AtomicU64,
    given_up: AtomicU64,
    left_pending: AtomicU64,
    cards_closed: AtomicU64,
}

impl DeliveryStats {
    pub(crate) fn report(&self) -> DeliveryReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeliveryReport {
            replies_retrying: get(&self.retrying),
            replies_redelivered: get(&self.redelivered),
            replies_given_up: get(&self.given_up),
            replies_left_pending: get(&self.left_pending),
            cards_closed_after_restart: get(&self.cards_closed),
        }
    }

    pub(crate) fn card_closed(&self) {
        self.cards_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a message as retrying for as long as it lives.
struct Retrying<'a>(&'a AtomicU64);

impl<'a> Retrying<'a> {
    fn enter(c: &'a AtomicU64) -> Retrying<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Retrying(c)
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Retries `reply` under `policy` until something was delivered or every try failed.
pub(crate) async fn redeliver<R: Redeliverable>(
    policy: RedeliveryPolicy,
    stats: &DeliveryStats,
    reply: &mut R,
) -> Settled {
    let _retrying = Retrying::enter(&stats.retrying);
    let total = policy.attempts.saturating_add(SORRY_ATTEMPTS);
    for n in 0..total {
        let delay = policy.spread_delay(n);
        let sorry = n >= policy.attempts;
        tracing::info!(
            msg_id = %reply.msg_id(),
            attempt = n + 1,
            of = total,
            sorry,
            delay_ms = delay.as_millis() as u64,
            "reply not delivered; retrying after a delay"
        );
        tokio::time::sleep(delay).await;
        let result = if sorry {
            reply.send_sorry().await
        } else {
            reply.send_answer().await
        };
        match result {
            Ok(()) if sorry => {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(msg_id = %reply.msg_id(), "answer given up on; the undelivered notice was sent instead");
                return Settled::SorrySent;
            }
            Ok(()) => {
                stats.redelivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(msg_id = %reply.msg_id(), attempt = n + 1, "reply delivered on retry");
                return Settled::Answered { attempt: n + 1 };
            }
            Err(e) => {
                tracing::warn!(msg_id = %reply.msg_id(), attempt = n + 1, sorry, error = %e, "retry failed")
            }
        }
    }
    stats.left_pending.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        msg_id = %reply.msg_id(),
        tries = total,
        "reply and undelivered notice both failed; the message stays in the inbox for the next start"
    );
    Settled::Undelivered
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tokio::time::Instant;

    /// Fails the first `failures` sends (answer and sorry alike), recording when each
    /// send happened on the (paused) tokio clock.
    struct Scripted {
        failures: usize,
        calls: Vec<(&'static str, Duration)>,
        start: Instant,
    }

    impl Scripted {
        fn new(failures: usize) -> Scripted {
            Scripted {
                failures,
                calls: Vec::new(),
                start: Instant::now(),
            }
        }
        fn attempt(&mut self, what: &'static str) -> Result<(), ChannelError> {
            self.calls.push((what, self.start.elapsed()));
            if self.calls.len() <= self.failures {
                return Err(ChannelError::Errcode {
                    api: "sessionWebhook".into(),
                    errcode: -1,
                    errmsg: "busy".into(),
                });
            }
            Ok(())
        }
    }

    impl Redeliverable for Scripted {
        fn msg_id(&self) -> &str {
            "msg-1"
        }
        async fn send_answer(&mut self) -> Result<(), ChannelError> {
            self.attempt("answer")
        }
        async fn send_sorry(&mut self) -> Result<(), ChannelError> {
            self.attempt("sorry")
        }
    }

    fn policy() -> RedeliveryPolicy {
        RedeliveryPolicy {
            attempts: 5,
            first_delay: Duration::from_secs(2),
        }
    }

    /// Asserts `calls` are `want` (what, the full wait before it in seconds), each wait
    /// being between half and all of its full wait.
    fn assert_waits(calls: &[(&'static str, Duration)], want: &[(&'static str, u64)]) {
        let whats: Vec<_> = calls.iter().map(|(w, _)| *w).collect();
        let want_whats: Vec<_> = want.iter().map(|(w, _)| *w).collect();
        assert_eq!(whats, want_whats);
        let mut before = Duration::ZERO;
        for ((_, at), (what, full)) in calls.iter().zip(want) {
            let (waited, full) = (*at - before, Duration::from_secs(*full));
            assert!(
                waited >= full / 2 && waited <= full,
                "{what} after {waited:?}, not within half of {full:?}"
            );
            before = *at;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_succeeds_ends_the_schedule() {
        let stats = DeliveryStats::default();
        let mut r = Scripted::new(2);
        let settled = redeliver(policy(), &stats, &mut r).await;
        assert_eq!(settled, Settled::Answered { attempt: 3 });
        assert_waits(&r.calls, &[("answer", 2), ("answer", 4), ("answer", 8)]);
        let rep = stats.report();
        assert_eq!((rep.replies_redelivered, rep.replies_retrying), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_bounded_answer_tries_the_sorry_is_sent_then_nothing_more() {
        let stats = DeliveryStats::default();
        let mut r = Scripted::new(5);
        let settled = redeliver(policy(), &stats, &mut r).await;
        assert_eq!(settled, Settled::SorrySent);
        assert!(settled.delivered());
        // 2, 4, 8, 16, 32 s between answer tries; the sorry waits 60 s (the cap, not 64).
        assert_waits(
            &r.calls,
            &[
                ("answer", 2),
                ("answer", 4),
                ("answer", 8),
                ("answer", 16),
                ("answer", 32),
                ("sorry", 60),
            ],
        );
        assert_eq!(stats.report().replies_given_up, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_even_the_sorry_fails_the_message_is_left_pending_and_counted() {
        let stats = DeliveryStats::default();
        let mut r = Scripted::new(usize::MAX);
        let settled = redeliver(
            RedeliveryPolicy {
                attempts: 1,
                first_delay: Duration::from_secs(1),
            },
            &stats,
            &mut r,
        )
        .await;
        assert_eq!(settled, Settled::Undelivered);
        assert!(!settled.delivered());
        // Bounded: one answer retry, then SORRY_ATTEMPTS sorry tries.
        assert_waits(&r.calls, &[("answer", 1), ("sorry", 2), ("sorry", 4)]);
        let rep = stats.report();
        assert_eq!((rep.replies_left_pending, rep.replies_retrying), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn while_waiting_the_message_counts_as_retrying() {
        let stats = DeliveryStats::default();
        let mut r = Scripted::new(0);
        let run = redeliver(policy(), &stats, &mut r);
        tokio::pin!(run);
        // Poll once: the task is now asleep in its first wait.
        assert!(futures_poll_once(&mut run).await.is_none());
        assert_eq!(stats.report().replies_retrying, 1);
        assert_eq!(run.await, Settled::Answered { attempt: 1 });
        assert_eq!(stats.report().replies_retrying, 0);
    }

    /// Replies that failed together are retried spread over the second half of each
    /// wait, not all at the same instant (a flood's undelivered replies went out in
    /// bursts at 2, 6, 14 ... s, with the send rate idle in between).
    #[tokio::test(start_paused = true)]
    async fn replies_that_failed_together_are_retried_spread_out() {
        let stats = Arc::new(DeliveryStats::default());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let stats = stats.clone();
                tokio::spawn(async move {
                    let mut r = Scripted::new(0);
                    redeliver(policy(), &stats, &mut r).await;
                    r.calls[0].1
                })
            })
            .collect();
        let mut first_tries = Vec::new();
        for t in tasks {
            first_tries.push(t.await.expect("task"));
        }
        first_tries.sort();
        first_tries.dedup();
        assert!(first_tries.len() > 10, "{first_tries:?}");
        let (earliest, latest) = (first_tries[0], first_tries[first_tries.len() - 1]);
        assert!(earliest >= Duration::from_secs(1) && latest <= Duration::from_secs(2));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = std::future::ready(()) => None,
        }
    }
}
