//! Restart delays: capped exponential backoff that forgets past crashes once a child has
//! stayed up long enough.

use std::time::Duration;

/// The delay schedule. Invariant: `initial <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the first restart after a stable run.
    pub initial: Duration,
    /// Ceiling for the doubling delay.
    pub max: Duration,
    /// A child that ran at least this long resets the delay to `initial`.
    pub stable_after: Duration,
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

/// Where we are in the schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial.min(policy.max),
        }
    }

    /// The delay before the next restart of a child that ran for `ran_for`; later calls
    /// double it up to the ceiling, unless a child ran for `stable_after` or longer.
    pub fn after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.stable_after {
            self.next = self.policy.initial.min(self.policy.max);
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.policy.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
