//! One sliding-window rate primitive for every "at most N in any window W" rule: DingTalk
//! sends (per API, per robot, per conversation) and the per-user message limit.
//!
//! Invariant: when every [`SlidingWindow::record`] follows a [`SlidingWindow::wait`] of
//! zero at the same instant, no half-open interval of length `window` holds more than
//! `limit` recorded instants: the count is over any sliding window, never per calendar
//! second. The time is passed in, so the logic is pure and any clock (a paused tokio
//! clock included) drives it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Instants of the recent events, oldest first.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl SlidingWindow {
    /// At most `limit` (at least 1) events in any `window`.
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        SlidingWindow {
            limit: limit.max(1),
            window,
            times: VecDeque::new(),
        }
    }

    /// Zero when one more event fits at `now`; else how long until the oldest event
    /// leaves the window. Forgets events that already left it.
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.times.pop_front();
        }
        if self.times.len() < self.limit {
            return Duration::ZERO;
        }
        let oldest = self.times.front().copied().unwrap_or(now);
        (oldest + self.window).saturating_duration_since(now)
    }

    /// Counts an event at `now` (call after a zero [`wait`](Self::wait)).
    pub(crate) fn record(&mut self, now: Instant) {
        self.times.push_back(now);
    }

    /// Counts an event at `now` when it fits, else says how long to wait.
    pub(crate) fn try_record(&mut self, now: Instant) -> Result<(), Duration> {
        match self.wait(now) {
            wait if wait.is_zero() => {
                self.record(now);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// True when no counted event is inside the window at `now`.
    fn is_idle(&self, now: Instant) -> bool {
        self.times
            .back()
            .is_none_or(|t| now.saturating_duration_since(*t) >= self.window)
    }
}

/// Keys tracked before idle windows are pruned (memory stays bounded by active keys).
const PRUNE_AT: usize = 4096;

/// One [`SlidingWindow`] per key (API path, conversation, user), all with the same rule.
#[derive(Debug)]
pub(crate) struct KeyedWindows {
    limit: usize,
    window: Duration,
    windows: HashMap<String, SlidingWindow>,
}

impl KeyedWindows {
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        KeyedWindows {
            limit,
            window,
            windows: HashMap::new(),
        }
    }

    /// [`SlidingWindow::wait`] of `key` (zero for a key never seen).
    pub(crate) fn wait(&mut self, key: &str, now: Instant) -> Duration {
        self.windows
            .get_mut(key)
            .map_or(Duration::ZERO, |w| w.wait(now))
    }

    /// [`SlidingWindow::record`] for `key`.
    pub(crate) fn record(&mut self, key: &str, now: Instant) {
        self.window_of(key, now).record(now);
    }

    /// [`SlidingWindow::try_record`] for `key`.
    pub(crate) fn try_record(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.window_of(key, now).try_record(now)
    }

    fn window_of(&mut self, key: &str, now: Instant) -> &mut SlidingWindow {
        if self.windows.len() >= PRUNE_AT && !self.windows.contains_key(key) {
            self.windows.retain(|_, w| !w.is_idle(now));
        }
        let (limit, window) = (self.limit, self.window);
        self.windows
            .entry(key.to_string())
            .or_insert_with(|| SlidingWindow::new(limit, window))
    }

    /// Keys tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Greedy senders at 1 ms steps for 3 s: every 1 s interval holds at most the limit,
    /// and the limit is reached (the window is not stricter than asked either).
    #[test]
    fn any_sliding_second_holds_at_most_the_limit() {
        let start = Instant::now();
        let mut w = SlidingWindow::new(20, Duration::from_secs(1));
        let mut sent = Vec::new();
        for step in 0..3_000u32 {
            let now = start + MS * step;
            if w.try_record(now).is_ok() {
                sent.push(now);
            }
        }
        assert_eq!(sent.len(), 60, "20 per second over 3 s");
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{in_window} sends within 1 s from #{i}");
        }
    }

    #[test]
    fn wait_names_when_the_oldest_leaves() {
        let t = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(1));
        assert!(w.try_record(t).is_ok());
        assert!(w.try_record(t + MS * 300).is_ok());
        assert_eq!(w.try_record(t + MS * 400), Err(MS * 600));
        assert!(w.try_record(t + MS * 1000).is_ok());
        assert_eq!(w.wait(t + MS * 1000), MS * 300);
    }

    #[test]
    fn keys_are_separate_and_idle_ones_are_pruned() {
        let t = Instant::now();
        let mut k = KeyedWindows::new(1, Duration::from_secs(1));
        assert!(k.try_record("a", t).is_ok());
        assert!(k.try_record("a", t).is_err());
        assert!(k.try_record("b", t).is_ok());
        assert_eq!(k.wait("never", t), Duration::ZERO);
        for i in 0..PRUNE_AT {
            k.record(&format!("k{i}"), t);
        }
        assert!(k.len() >= PRUNE_AT);
        k.record("late", t + Duration::from_secs(2));
        assert_eq!(k.len(), 1, "idle windows pruned");
    }
}
