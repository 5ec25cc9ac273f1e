//! Capped exponential backoff, the one schedule every retry loop uses: the model service's
//! restarts ([`Backoff`], which forgets past crashes once a child stayed up long enough),
//! the stream client's reconnects, the bot's redelivery of undelivered replies and the
//! journal's retries of unwritten "answered" records
//! ([`capped_doubling`]).

use std::time::Duration;

/// The delay schedule. Invariant: `initial <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffPolicy {
    /// Delay before the first restart after a stable run.
    pub(crate) initial: Duration,
    /// Ceiling for the doubling delay.
    pub(crate) max: Duration,
    /// A child that ran at least this long resets the delay to `initial`.
    pub(crate) stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 0.5 s doubling to 30 s, reset after 60 s of uptime.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// The delay before retry `attempt` (0-based): `initial · 2^attempt`, never above `max`
/// (and never above `max` even when `initial > max`). Saturates instead of overflowing.
pub(crate) fn capped_doubling(initial: Duration, max: Duration, attempt: u32) -> Duration {
    initial.saturating_mul(1u32 << attempt.min(31)).min(max)
}

/// Where we are in the schedule.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    /// Restarts since the last stable run.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, attempt: 0 }
    }

    /// The delay before the next restart of a child that ran for `ran_for`; later calls
    /// double it up to the ceiling, unless a child ran for `stable_after` or longer.
    pub(crate) fn after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.stable_after {
            self.attempt = 0;
        }
        let delay = capped_doubling(self.policy.initial, self.policy.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_doubling_grows_to_the_cap_and_never_overflows() {
        let ms = Duration::from_millis;
        let delays: Vec<u64> = (0..6)
            .map(|n| capped_doubling(ms(100), ms(1000), n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(capped_doubling(ms(100), ms(1000), u32::MAX), ms(1000));
        let huge = Duration::from_secs(u64::MAX / 2);
        assert_eq!(capped_doubling(huge, Duration::MAX, 40), Duration::MAX);
        assert_eq!(capped_doubling(ms(500), ms(200), 0), ms(200));
    }

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..9)
            .map(|_| b.after_run(quick).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(
            b.after_run(Duration::from_secs(60)),
            Duration::from_millis(500)
        );
        assert_eq!(b.after_run(quick), Duration::from_secs(1));
    }
}
