//! Wall-clock time as Unix epoch numbers, for timestamps that are shown, stored or
//! exchanged with DingTalk. Durations and deadlines use `Instant` (tokio's, so tests can
//! pause it), never these.
//!
//! Invariant: a clock set before 1970 reads as 0 instead of failing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Microseconds since the Unix epoch (for latency figures finer than a millisecond).
pub fn now_us() -> u64 {
    since_epoch().as_micros() as u64
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
}
