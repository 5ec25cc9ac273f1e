//! Bounded duplicate filter: remembers keys for a time window, at most `capacity` of them
//! (oldest evicted first). A message is a duplicate when *any* of its keys (frame
//! `messageId`, payload `msgId`) was seen inside the window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct Dedupe {
    window: Duration,
    capacity: usize,
    seen: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl Dedupe {
    pub fn new(window: Duration, capacity: usize) -> Dedupe {
        Dedupe {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True when none of `keys` was seen recently; records all of them either way.
    pub fn first_time(&mut self, keys: &[&str]) -> bool {
        self.first_time_at(keys, Instant::now())
    }

    /// True when any of `keys` was seen recently; records nothing.
    pub fn seen(&mut self, keys: &[&str]) -> bool {
        self.expire(Instant::now());
        keys.iter()
            .any(|k| !k.is_empty() && self.seen.contains_key(*k))
    }

    /// Remembers `keys` from now on.
    pub fn record(&mut self, keys: &[&str]) {
        self.record_at(keys, Instant::now());
    }

    fn first_time_at(&mut self, keys: &[&str], now: Instant) -> bool {
        self.expire(now);
        let dup = keys
            .iter()
            .any(|k| !k.is_empty() && self.seen.contains_key(*k));
        self.record_at(keys, now);
        !dup
    }

    fn record_at(&mut self, keys: &[&str], now: Instant) {
        for k in keys.iter().filter(|k| !k.is_empty()) {
            if self.seen.insert((*k).to_string(), now).is_none() {
                self.order.push_back(((*k).to_string(), now));
            }
        }
        while self.order.len() > self.capacity {
            if let Some((k, _)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((k, t)) = self.order.front() {
            if now.duration_since(*t) < self.window {
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
}
