//! A per-API sliding-window rate limiter: at most `per_second` calls to each API path in
//! any 1-second window (DingTalk: 20 QPS per app per API, spec §8). Callers wait, never fail.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct QpsLimiter {
    per_second: usize,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl QpsLimiter {
    pub fn new(per_second: usize) -> QpsLimiter {
        QpsLimiter {
            per_second: per_second.max(1),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a call to `api` fits in the window, then records it.
    pub async fn acquire(&self, api: &str) {
        loop {
            let wait = self.try_acquire(api, Instant::now());
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Records the call and returns `None`, or returns how long to wait.
    fn try_acquire(&self, api: &str, now: Instant) -> Option<Duration> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let q = calls.entry(api.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() < self.per_second {
            q.push_back(now);
            return None;
        }
        let oldest = *q.front()?;
        Some(
            Duration::from_secs(1).saturating_sub(now.duration_since(oldest))
                + Duration::from_millis(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_api_separately() {
        let l = QpsLimiter::new(2);
        let t = Instant::now();
        assert!(l.try_acquire("/a", t).is_none());
        assert!(l.try_acquire("/a", t).is_none());
        assert!(l.try_acquire("/a", t).is_some());
        assert!(l.try_acquire("/b", t).is_none());
        assert!(l
            .try_acquire("/a", t + Duration::from_millis(1001))
            .is_none());
    }
}
