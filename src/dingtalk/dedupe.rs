//! Bounded duplicate filter: remembers keys for a time window, at most `capacity` of them
//! (oldest evicted first). A message is a duplicate when *any* of its keys (frame
//! `messageId`, payload `msgId`) was seen inside the window.
//!
//! Keys are remembered as 128-bit keyed fingerprints ([`IdDigest`], 16 bytes inline, see
//! there for why a false duplicate is not a practical risk), not as strings, each with a
//! millisecond stamp: 24 bytes in the order queue and 17 in the set per key. Both are
//! sized for `capacity` keys up front (their pages become resident only as keys arrive),
//! so neither doubles past it: a queue grown by doubling to 10 001 keys held room for
//! 16 384.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::clock::{millis, MonoMillis};
use crate::message_digest::IdDigest;

/// Keys one message brings (the frame's `messageId` and the payload's `msgId`): the queue
/// holds up to `capacity` plus these while a message is recorded.
const KEYS_PER_MESSAGE: usize = 2;

pub struct Dedupe {
    /// The window in milliseconds.
    window_ms: u64,
    capacity: usize,
    /// The clock of the stamps in `order`.
    clock: MonoMillis,
    /// The keys of `order`, each once.
    seen: HashSet<IdDigest>,
    /// Keys in the order first seen, with when (a `clock` stamp; oldest first).
    order: VecDeque<(IdDigest, u64)>,
}

impl Dedupe {
    pub fn new(window: Duration, capacity: usize) -> Dedupe {
        let capacity = capacity.max(1);
        Dedupe {
            window_ms: millis(window),
            capacity,
            clock: MonoMillis::new(),
            seen: HashSet::with_capacity(capacity + KEYS_PER_MESSAGE),
            order: VecDeque::with_capacity(capacity + KEYS_PER_MESSAGE),
        }
    }

    /// True when none of `keys` was seen recently; records all of them either way.
    pub fn first_time(&mut self, keys: &[&str]) -> bool {
        self.first_time_at(keys, Instant::now())
    }

    /// True when any of `keys` was seen recently; records nothing.
    pub fn seen(&mut self, keys: &[&str]) -> bool {
        self.seen_at(keys, Instant::now())
    }

    fn seen_at(&mut self, keys: &[&str], now: Instant) -> bool {
        self.expire(now);
        self.any_seen(keys)
    }

    /// Remembers `keys` from now on.
    pub fn record(&mut self, keys: &[&str]) {
        self.record_at(keys, Instant::now());
    }

    fn first_time_at(&mut self, keys: &[&str], now: Instant) -> bool {
        self.expire(now);
        let dup = self.any_seen(keys);
        self.record_at(keys, now);
        !dup
    }

    fn any_seen(&self, keys: &[&str]) -> bool {
        keys.iter()
            .any(|k| !k.is_empty() && self.seen.contains(&IdDigest::of(k)))
    }

    fn record_at(&mut self, keys: &[&str], now: Instant) {
        let now = self.clock.stamp(now);
        for k in keys.iter().filter(|k| !k.is_empty()) {
            let digest = IdDigest::of(k);
            if self.seen.insert(digest) {
                self.order.push_back((digest, now));
            }
        }
        while self.order.len() > self.capacity {
            if let Some((k, _)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let now = self.clock.stamp(now);
        while let Some((k, t)) = self.order.front() {
            if now.saturating_sub(*t) < self.window_ms {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_key_marks_a_duplicate() {
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        assert!(d.first_time(&["frame1", "msgA"]));
        assert!(!d.first_time(&["frame1", "msgA"]));
        assert!(
            !d.first_time(&["frame2", "msgA"]),
            "redelivery with a new frame id"
        );
        assert!(!d.first_time(&["frame1", "msgB"]));
        assert!(d.first_time(&["frame3", "msgC"]));
    }

    #[test]
    fn bounded_by_window_and_capacity() {
        let mut d = Dedupe::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(d.first_time_at(&["a"], t0));
        assert!(d.first_time_at(&["b"], t0));
        assert!(d.first_time_at(&["c"], t0));
        assert!(d.first_time_at(&["a"], t0), "evicted by capacity");
        assert!(!d.first_time_at(&["c"], t0));
        assert!(
            d.first_time_at(&["c"], t0 + Duration::from_secs(11)),
            "expired by window"
        );
    }

    /// Issue 12: with keys kept as fingerprints, 5 000 messages (two keys each) are still
    /// told apart, a redelivery under either key is caught anywhere in the window, the
    /// filter never holds more than `capacity` keys, and after the window it holds none.
    #[test]
    fn fingerprints_keep_the_window_and_the_bounds() {
        let window = Duration::from_secs(600);
        let mut d = Dedupe::new(window, 10_000);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for i in 0..5_000u32 {
            let (frame, msg) = (format!("frame{i}"), format!("msg{i}"));
            assert!(d.first_time_at(&[&frame, &msg], t0 + ms * i), "#{i}");
        }
        let late = t0 + window - ms;
        for i in 0..5_000u32 {
            let (frame, msg) = (format!("frame{i}"), format!("msg{i}"));
            assert!(d.seen_at(&["new-frame", &msg], late), "msg{i} redelivered");
            assert!(d.seen_at(&[&frame, ""], late), "frame{i} redelivered");
        }
        assert!(!d.seen_at(&["frame5000", "msg5000"], late));
        assert_eq!((d.seen.len(), d.order.len()), (10_000, 10_000));
        assert!(d.first_time_at(&["frame5000", "msg5000"], late));
        assert_eq!((d.seen.len(), d.order.len()), (10_000, 10_000), "capacity");
        assert!(
            d.order.capacity() < 10_100,
            "the queue grew to room for {} keys",
            d.order.capacity()
        );
        assert!(
            !d.seen_at(&["frame0", "msg0"], late),
            "oldest evicted first"
        );
        assert!(d.seen_at(&["frame1", ""], late));
        assert!(!d.seen_at(&["frame5000"], late + window));
        assert!(d.seen.is_empty() && d.order.is_empty(), "window passed");
    }
}
