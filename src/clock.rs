//! Wall-clock time as Unix epoch numbers, for timestamps that are shown, stored or
//! exchanged with DingTalk. Durations and deadlines use `Instant` (tokio's, so tests can
//! pause it), never these; [`MonoMillis`] turns such instants into 8-byte stamps for
//! structures that keep one per entry.
//!
//! Invariant: a clock set before 1970 reads as 0 instead of failing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Microseconds since the Unix epoch (for latency figures finer than a millisecond).
pub fn now_us() -> u64 {
    since_epoch().as_micros() as u64
}

/// Monotonic millisecond stamps from an origin taken at construction: a `u64` per entry
/// instead of a 16-byte `Instant` (the duplicate filter's queue, the conversation memory).
///
/// Invariant: an instant before the origin stamps as 0; a span too long for a `u64` of
/// milliseconds (585 million years) saturates instead of wrapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonoMillis {
    origin: Instant,
}

impl MonoMillis {
    pub(crate) fn new() -> MonoMillis {
        MonoMillis {
            origin: Instant::now(),
        }
    }

    /// Milliseconds from the origin to `at`.
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.origin))
    }
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_microseconds_agree() {
        let (ms, us) = (now_ms(), now_us());
        assert!(ms > 1_600_000_000_000, "{ms}");
        assert!(us / 1000 >= ms && us / 1000 - ms < 60_000, "{ms} {us}");
    }

    #[test]
    fn monotonic_stamps_count_from_the_origin_and_never_wrap() {
        let clock = MonoMillis::new();
        let later = clock.origin + Duration::from_millis(1_500);
        assert_eq!(clock.stamp(later), 1_500);
        assert_eq!(clock.stamp(clock.origin - Duration::from_millis(1)), 0);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
