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

/// How long a caller waits before asking again when the window is full of events still
/// in flight (they leave it only after they finish, at a time not known yet).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);

/// One counted event: when it happened, or when it started while it is still in flight.
#[derive(Debug, Clone, Copy)]
struct Event {
    id: EventId,
    at: Instant,
    in_flight: bool,
}

/// Names an event started with [`SlidingWindow::start`], to [`SlidingWindow::finish`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventId(u64);

/// The recent events (at most `limit` are ever inside the window).
///
/// An event may be counted in two steps ([`start`](Self::start) then
/// [`finish`](Self::finish)): it takes its place at its start, stays in the window for
/// as long as it is in flight, and when it finishes its time moves to the finish time.
/// For a request this bounds the receiver's view whatever the delays: the server got
/// the request at or before we got its answer, and the request that reuses the place
/// starts at least `window` after that answer.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: usize,
    window: Duration,
    /// In the order they were counted, so their ids ascend (see [`Self::finish`]).
    events: VecDeque<Event>,
    next_id: u64,
}

impl SlidingWindow {
    /// At most `limit` (at least 1) events in any `window`.
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        SlidingWindow {
            limit: limit.max(1),
            window,
            events: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The most events in any window.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Zero when one more event fits at `now` and leaves `keep_free` places free (at most
    /// `limit - 1` are kept: with none in the window an event always fits); else how
    /// long until the oldest finished event leaves the window (or [`IN_FLIGHT_POLL`] when
    /// all are in flight), when the caller asks again. Forgets finished events that
    /// already left it.
    ///
    /// Cost: constant per counted event on the way to a full window (the oldest events
    /// are forgotten from the front); a scan of the window only when it may be full. A
    /// robot window with a high limit holds ~1 000 events at 1 000 sends a second, and
    /// scanning them on every send was ~2 % of the daemon's CPU (issue 12, perf).
    pub(crate) fn wait(&mut self, now: Instant, keep_free: usize) -> Duration {
        let room = self.limit - keep_free.min(self.limit - 1);
        self.forget_oldest_gone(now);
        if self.events.len() < room {
            // Events behind one still in flight may have left too: fewer count, not more.
            return Duration::ZERO;
        }
        let window = self.window;
        self.events
            .retain(|e| e.in_flight || now.saturating_duration_since(e.at) < window);
        if self.events.len() < room {
            return Duration::ZERO;
        }
        self.events
            .iter()
            .filter(|e| !e.in_flight)
            .map(|e| (e.at + window).saturating_duration_since(now))
            .min()
            .unwrap_or(IN_FLIGHT_POLL)
    }

    /// Counts an event at `now` (call after a zero [`wait`](Self::wait)).
    pub(crate) fn record(&mut self, now: Instant) {
        self.push(now, false);
    }

    /// Counts an event that starts at `now` and lasts until [`finish`](Self::finish)
    /// (call after a zero [`wait`](Self::wait)).
    pub(crate) fn start(&mut self, now: Instant) -> EventId {
        self.push(now, true)
    }

    /// Ends the event `id` at `now`: it leaves the window `window` after `now`.
    pub(crate) fn finish(&mut self, id: EventId, now: Instant) {
        if let Ok(i) = self.events.binary_search_by_key(&id.0, |e| e.id.0) {
            let e = &mut self.events[i];
            e.at = e.at.max(now);
            e.in_flight = false;
        }
    }

    /// Forgets the oldest events while they are finished and out of the window.
    fn forget_oldest_gone(&mut self, now: Instant) {
        while self
            .events
            .front()
            .is_some_and(|e| !e.in_flight && now.saturating_duration_since(e.at) >= self.window)
        {
            self.events.pop_front();
        }
    }

    fn push(&mut self, at: Instant, in_flight: bool) -> EventId {
        if self.events.capacity() == 0 {
            // Most keyed windows only ever hold one event: no room for four up front.
            self.events.reserve_exact(1);
        }
        let id = EventId(self.next_id);
        self.next_id += 1;
        self.events.push_back(Event { id, at, in_flight });
        id
    }

    /// Counts an event at `now` when it fits, else says how long to wait.
    pub(crate) fn try_record(&mut self, now: Instant) -> Result<(), Duration> {
        match self.wait(now, 0) {
            wait if wait.is_zero() => {
                self.record(now);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// True when no counted event is inside the window (or in flight) at `now`.
    fn is_idle(&self, now: Instant) -> bool {
        self.events
            .iter()
            .all(|e| !e.in_flight && now.saturating_duration_since(e.at) >= self.window)
    }
}

/// Fewest keys tracked before a growing map is swept early (see [`KeyedWindows`]).
const SWEEP_AT_LEAST: usize = 64;

/// One [`SlidingWindow`] per key (API path, conversation, user), all with the same rule.
///
/// Memory: idle windows (nothing in flight or inside the window: they constrain nothing)
/// are swept out, so the map holds the keys active within the last two windows plus at
/// most [`SWEEP_AT_LEAST`] or as many again as the last sweep kept. A sweep runs on the
/// first call one `window` after the previous one, or when the map has doubled since
/// (at least [`SWEEP_AT_LEAST`] keys); either way its cost is at most two calls' worth
/// per key tracked, so the work per call stays constant on average.
#[derive(Debug)]
pub(crate) struct KeyedWindows {
    limit: usize,
    window: Duration,
    windows: HashMap<Box<str>, SlidingWindow>,
    /// When the last sweep ran (`None`: never).
    swept_at: Option<Instant>,
    /// The map size that triggers a sweep before `window` has passed.
    sweep_at_len: usize,
}

impl KeyedWindows {
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        KeyedWindows {
            limit,
            window,
            windows: HashMap::new(),
            swept_at: None,
            sweep_at_len: SWEEP_AT_LEAST,
        }
    }

    /// [`SlidingWindow::wait`] of `key` (zero for a key never seen).
    pub(crate) fn wait(&mut self, key: &str, now: Instant, keep_free: usize) -> Duration {
        self.sweep_when_due(now);
        self.windows
            .get_mut(key)
            .map_or(Duration::ZERO, |w| w.wait(now, keep_free))
    }

    /// [`SlidingWindow::record`] for `key`.
    #[cfg(test)]
    pub(crate) fn record(&mut self, key: &str, now: Instant) {
        self.window_of(key, now).record(now);
    }

    /// [`SlidingWindow::start`] for `key`.
    pub(crate) fn start(&mut self, key: &str, now: Instant) -> EventId {
        self.window_of(key, now).start(now)
    }

    /// [`SlidingWindow::finish`] for `key`.
    pub(crate) fn finish(&mut self, key: &str, id: EventId, now: Instant) {
        if let Some(w) = self.windows.get_mut(key) {
            w.finish(id, now);
        }
    }

    /// [`SlidingWindow::try_record`] for `key`.
    pub(crate) fn try_record(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.window_of(key, now).try_record(now)
    }

    fn window_of(&mut self, key: &str, now: Instant) -> &mut SlidingWindow {
        self.sweep_when_due(now);
        let (limit, window) = (self.limit, self.window);
        self.windows
            .entry(Box::from(key))
            .or_insert_with(|| SlidingWindow::new(limit, window))
    }

    /// Drops the idle windows when a sweep is due (see [`KeyedWindows`]).
    fn sweep_when_due(&mut self, now: Instant) {
        let window_passed = self
            .swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window);
        if self.windows.is_empty() || !(window_passed || self.windows.len() >= self.sweep_at_len) {
            return;
        }
        self.windows.retain(|_, w| !w.is_idle(now));
        self.swept_at = Some(now);
        self.sweep_at_len = (2 * self.windows.len()).max(SWEEP_AT_LEAST);
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

    /// Red-team F5: an event in flight stays counted however long it lasts, and when it
    /// finishes it leaves the window `window` after its finish, not after its start.
    #[test]
    fn a_finished_event_leaves_the_window_after_its_finish() {
        let t = Instant::now();
        let mut w = SlidingWindow::new(1, Duration::from_secs(1));
        assert_eq!(w.wait(t, 0), Duration::ZERO);
        let id = w.start(t);
        assert_eq!(
            w.wait(t + MS * 5000, 0),
            IN_FLIGHT_POLL,
            "in flight: still counted"
        );
        w.finish(id, t + MS * 5300);
        assert_eq!(w.wait(t + MS * 5300, 0), MS * 1000);
        assert_eq!(w.wait(t + MS * 6300, 0), Duration::ZERO);
    }

    /// The oldest event still in flight does not keep the finished ones behind it counted
    /// once they left the window, and any of many events can be finished by its id.
    #[test]
    fn events_behind_one_in_flight_leave_on_time() {
        let t = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(1));
        let slow = w.start(t);
        w.record(t + MS * 10);
        let middle = w.start(t + MS * 20);
        assert_eq!(
            w.wait(t + MS * 30, 0),
            MS * 980,
            "full: the recorded one leaves first"
        );
        w.finish(middle, t + MS * 100);
        assert_eq!(w.wait(t + MS * 1010, 0), Duration::ZERO);
        w.record(t + MS * 1010);
        // The slow send, the one recorded at 1010 and `middle` (finished at 100) are in.
        assert_eq!(w.wait(t + MS * 1050, 0), MS * 50);
        assert_eq!(w.wait(t + MS * 1100, 0), Duration::ZERO, "middle left");
        w.finish(slow, t + MS * 1100);
        w.record(t + MS * 1100);
        assert_eq!(w.wait(t + MS * 1100, 0), MS * 910);
    }

    #[test]
    fn wait_names_when_the_oldest_leaves() {
        let t = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(1));
        assert!(w.try_record(t).is_ok());
        assert!(w.try_record(t + MS * 300).is_ok());
        assert_eq!(w.try_record(t + MS * 400), Err(MS * 600));
        assert!(w.try_record(t + MS * 1000).is_ok());
        assert_eq!(w.wait(t + MS * 1000, 0), MS * 300);
    }

    #[test]
    fn places_kept_free_are_not_given_but_one_always_is() {
        let t = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(1));
        w.record(t);
        assert_eq!(w.wait(t, 1), Duration::ZERO, "2 of 3 taken leaves 1 free");
        w.record(t + MS * 100);
        assert_eq!(w.wait(t + MS * 200, 1), MS * 800, "the 3rd is kept free");
        assert_eq!(
            w.wait(t + MS * 200, 0),
            Duration::ZERO,
            "unless none is kept"
        );
        // More kept than the limit allows: one place is still given, in an empty window.
        let mut empty = SlidingWindow::new(3, Duration::from_secs(1));
        assert_eq!(empty.wait(t, 7), Duration::ZERO);
        empty.record(t);
        assert_eq!(empty.wait(t, 7), MS * 1000);
    }

    #[test]
    fn keys_are_separate_and_idle_ones_are_pruned() {
        let t = Instant::now();
        let mut k = KeyedWindows::new(1, Duration::from_secs(1));
        assert!(k.try_record("a", t).is_ok());
        assert!(k.try_record("a", t).is_err());
        assert!(k.try_record("b", t).is_ok());
        assert_eq!(k.wait("never", t, 0), Duration::ZERO);
        for i in 0..SWEEP_AT_LEAST {
            k.record(&format!("k{i}"), t);
        }
        assert!(k.len() >= SWEEP_AT_LEAST);
        k.record("late", t + Duration::from_secs(2));
        assert_eq!(k.len(), 1, "idle windows pruned");
    }

    /// Issue 12: 10 000 conversations at 500 per second, one send each. The map holds
    /// about the keys of the last two windows (not every key ever seen, nor thousands of
    /// idle ones), a window in flight is never dropped, and once all went quiet one call
    /// later the map is empty.
    #[test]
    fn windows_of_quiet_keys_are_swept() {
        let t = Instant::now();
        let mut k = KeyedWindows::new(1, Duration::from_secs(1));
        let busy = k.start("busy", t);
        let mut most = 0;
        for i in 0..10_000u32 {
            let now = t + MS * (2 * i);
            assert!(k.try_record(&format!("c{i}"), now).is_ok());
            most = most.max(k.len());
        }
        assert!(most <= 2_000, "{most} windows kept for 500 active keys");
        let end = t + MS * 21_000;
        assert_eq!(
            k.wait("busy", end, 0),
            IN_FLIGHT_POLL,
            "in flight: still counted"
        );
        assert_eq!(
            k.len(),
            1,
            "only the window in flight is left a second later"
        );
        k.finish("busy", busy, end);
        assert_eq!(k.wait("busy", end + MS * 999, 0), MS);
        assert_eq!(k.wait("anyone", end + MS * 1000, 0), Duration::ZERO);
        assert_eq!(k.len(), 0, "all windows idle: none kept");
    }
}
