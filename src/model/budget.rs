//! The time budget of one turn, split into phases.
//!
//! Invariant: every phase deadline is capped by the turn's total deadline
//! (`arrived + timeout_ms`), so no wait anywhere can outlive the turn. SSE comments
//! (keepalive pings) never move any deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ModelConfig;

/// Per-phase budgets of one model, resolved from its config with the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseBudgets {
    pub total: Duration,
    /// Default `min(2000, total / 4)` ms.
    pub connect: Duration,
    /// From request sent to the first content token; `None` means "the time left". When
    /// the model has a `fallback` and no explicit value, half the total: a server that
    /// never sends a byte must leave the fallback enough time to answer.
    pub first_token: Option<Duration>,
    /// Longest silence between two streamed data events; default `min(5000, total / 2)` ms.
    pub idle: Duration,
}

impl PhaseBudgets {
    pub fn from_config(cfg: &ModelConfig) -> Self {
        let total = cfg.timeout_ms.max(1);
        PhaseBudgets {
            total: Duration::from_millis(total),
            connect: Duration::from_millis(
                cfg.connect_timeout_ms
                    .unwrap_or((total / 4).min(2_000))
                    .max(1),
            ),
            first_token: cfg
                .first_token_timeout_ms
                .map(|ft| ft.max(1))
                .or_else(|| cfg.fallback.as_ref().map(|_| total / 2))
                .map(Duration::from_millis),
            idle: Duration::from_millis(
                cfg.idle_timeout_ms.unwrap_or((total / 2).min(5_000)).max(1),
            ),
        }
    }
}

/// Deadlines for one model call inside a turn.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlines {
    /// The turn's end: nothing may wait past it.
    pub total: Instant,
    pub first_token: Instant,
    pub idle: Duration,
}

impl CallDeadlines {
    /// Deadlines for a call starting now, inside a turn ending at `total`.
    pub fn start(budgets: &PhaseBudgets, total: Instant) -> Self {
        let now = Instant::now();
        let first_token = budgets
            .first_token
            .map_or(total, |ft| (now + ft).min(total));
        CallDeadlines {
            total,
            first_token,
            idle: budgets.idle,
        }
    }

    /// When the next data event must arrive: before the first content token the
    /// first-token deadline applies, after it the idle gap from the last data event.
    /// Both are capped by the total deadline. Returns the deadline and which phase it is.
    pub fn next(&self, last_data: Option<Instant>) -> (Instant, super::error::TimeoutPhase) {
        use super::error::TimeoutPhase;
        let (at, phase) = match last_data {
            None => (self.first_token, TimeoutPhase::FirstToken),
            Some(t) => (t + self.idle, TimeoutPhase::Idle),
        };
        if at >= self.total {
            (self.total, TimeoutPhase::Total)
        } else {
            (at, phase)
        }
    }
}

/// Longest a request may still need once sent, for [`worth_sending`]: its connect budget,
/// capped here (a 2 s connect budget would refuse turns that a warm runtime answers).
const MAX_SEND_FLOOR: Duration = Duration::from_secs(1);

/// Whether a request with time until `deadline` is worth sending at `now`: at least
/// `min(connect budget, 1 s)` must be left. A turn that waited in line until almost
/// nothing is left would be abandoned at once, while the runtime (which notices the
/// close late) still counts it against its own limit; such a turn gets the fallback text.
pub(crate) fn worth_sending(now: Instant, deadline: Instant, budgets: &PhaseBudgets) -> bool {
    now <= last_useful_send(deadline, budgets)
}

/// The last moment a request of a turn ending at `deadline` is worth sending (see
/// [`worth_sending`]): waits before the model call (in line behind the conversation)
/// end by then, or the turn would only fail as a timeout the model never had.
pub(crate) fn last_useful_send(deadline: Instant, budgets: &PhaseBudgets) -> Instant {
    deadline
        .checked_sub(budgets.connect.min(MAX_SEND_FLOOR))
        .unwrap_or(deadline)
}

/// The deadline of a fallback call starting at `now`, or `None` when it is not worth trying.
///
/// The rule (README "Split time budget"): the fallback gets `min(time left in the turn, its
/// own timeout_ms)`, its own budget counted from its own start (never from the turn's
/// arrival, or a silent primary would eat it); it is tried only when that window is at
/// least a quarter of the smaller of the two `timeout_ms`. Invariant: the result is never
/// past `turn_deadline` nor past `now + fallback.total`.
pub(crate) fn fallback_deadline(
    now: Instant,
    turn_deadline: Instant,
    turn: &PhaseBudgets,
    fallback: &PhaseBudgets,
) -> Option<Instant> {
    let left = turn_deadline.saturating_duration_since(now);
    let window = left.min(fallback.total);
    let least_useful = turn.total.min(fallback.total) / 4;
    (!window.is_zero() && window >= least_useful).then(|| now + window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::TimeoutPhase;

    #[tokio::test]
    async fn phases_are_capped_by_total() {
        let b = PhaseBudgets {
            total: Duration::from_millis(1000),
            connect: Duration::from_millis(100),
            first_token: Some(Duration::from_millis(300)),
            idle: Duration::from_millis(200),
        };
        let end = Instant::now() + Duration::from_millis(250);
        let d = CallDeadlines::start(&b, end);
        assert_eq!(d.next(None), (end, TimeoutPhase::Total));
        let end = Instant::now() + Duration::from_secs(10);
        let d = CallDeadlines::start(&b, end);
        assert_eq!(d.next(None).1, TimeoutPhase::FirstToken);
        let t = Instant::now();
        assert_eq!(
            d.next(Some(t)),
            (t + Duration::from_millis(200), TimeoutPhase::Idle)
        );
    }

    fn budgets(timeout_ms: u64, first_token_ms: Option<u64>, with_fallback: bool) -> PhaseBudgets {
        let mut yaml = format!(
            "kind: openai_compatible\nbase_url: http://127.0.0.1:1/v1\nmodel: m\ntimeout_ms: {timeout_ms}\n"
        );
        if let Some(ft) = first_token_ms {
            yaml.push_str(&format!("first_token_timeout_ms: {ft}\n"));
        }
        if with_fallback {
            yaml.push_str("fallback: spare\n");
        }
        let cfg: ModelConfig = serde_yaml::from_str(&yaml).expect("model config");
        PhaseBudgets::from_config(&cfg)
    }

    /// Issue 10 item 5: primary / first-token / fallback budgets on a grid, on paused time.
    /// A primary that never sends a byte fails at its first-token deadline; then the
    /// fallback must get `min(left, its own timeout_ms)`, never past the turn, and a
    /// default first-token budget must always leave the fallback its chance.
    #[tokio::test(start_paused = true)]
    async fn fallback_budget_grid_for_a_silent_primary() {
        let ms = Duration::from_millis;
        let mut tried = 0;
        for primary_ms in [1_000u64, 3_000, 6_000, 12_000, 30_000] {
            let first_tokens = [
                None,
                Some(primary_ms / 10),
                Some(primary_ms / 2),
                Some(primary_ms * 4 / 5),
                Some(primary_ms * 19 / 20),
                Some(primary_ms),
                Some(primary_ms * 2),
            ];
            for first_token in first_tokens {
                for fallback_ms in [100u64, 300, 1_000, 2_000, 4_000, 6_000, 12_000, 60_000] {
                    let turn = budgets(primary_ms, first_token, true);
                    let fallback = budgets(fallback_ms, None, false);
                    let arrived = Instant::now();
                    let turn_deadline = arrived + turn.total;
                    let (silent_until, phase) =
                        CallDeadlines::start(&turn, turn_deadline).next(None);
                    tokio::time::advance(silent_until - arrived).await;
                    let now = Instant::now();
                    let left = turn_deadline - now;
                    let got = fallback_deadline(now, turn_deadline, &turn, &fallback);
                    let case = format!(
                        "primary {primary_ms} first_token {first_token:?} fallback {fallback_ms}: {got:?}"
                    );
                    if let Some(end) = got {
                        tried += 1;
                        assert!(end <= turn_deadline, "past the turn: {case}");
                        assert_eq!(end - now, left.min(fallback.total), "{case}");
                        assert!(
                            left.min(fallback.total) >= turn.total.min(fallback.total) / 4,
                            "{case}"
                        );
                    } else {
                        assert!(
                            phase == TimeoutPhase::Total
                                || left.min(fallback.total) < turn.total.min(fallback.total) / 4,
                            "skipped with time left: {case}"
                        );
                    }
                    if first_token.is_none() || first_token <= Some(primary_ms / 2) {
                        assert!(got.is_some(), "a silent primary left no time: {case}");
                    }
                    if primary_ms == 6_000 && first_token.is_none() && fallback_ms <= 4_000 {
                        // The reported case: fallback 4000 ms or less behind a 6000 ms primary.
                        assert_eq!(got, Some(now + ms(fallback_ms.min(3_000))), "{case}");
                    }
                }
            }
        }
        assert!(tried > 100, "the grid exercised the fallback ({tried})");
    }
}
