//! Per-model counters and latency percentiles for the status report.
//!
//! Invariants: memory is bounded (a ring of the last [`LATENCY_SAMPLES`] latencies);
//! `last_error` holds an error class, never message text.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::limiter::LimiterSnapshot;
use crate::status::ModelReport;

/// Latency samples kept for the percentiles.
pub const LATENCY_SAMPLES: usize = 512;

#[derive(Debug, Default)]
struct Counters {
    served: u64,
    failures: u64,
    timeouts: u64,
    fallbacks: u64,
    busy_rejections: u64,
    replica_retries: u64,
    latencies: VecDeque<u64>,
    max_prompt_chars_seen: usize,
    last_error: Option<String>,
}

/// One model's figures.
#[derive(Debug, Default)]
pub struct ModelStats {
    inner: Mutex<Counters>,
}

impl ModelStats {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A call answered; `latency_ms` runs from sending the request to the last byte.
    pub fn served(&self, latency_ms: u64) {
        self.with(|c| {
            c.served += 1;
            if c.latencies.len() == LATENCY_SAMPLES {
                c.latencies.pop_front();
            }
            c.latencies.push_back(latency_ms);
        });
    }

    /// A call failed; `error` is a safe class string (see [`super::error::ModelError`]).
    pub fn failed(&self, error: String, timed_out: bool) {
        self.with(|c| {
            c.failures += 1;
            if timed_out {
                c.timeouts += 1;
            }
            c.last_error = Some(error);
        });
    }

    /// This model failed and a fallback model was tried.
    pub fn fell_back(&self) {
        self.with(|c| c.fallbacks += 1);
    }

    /// A request that failed before its first token was sent again to another replica.
    pub fn retried_on_another_replica(&self) {
        self.with(|c| c.replica_retries += 1);
    }

    pub fn busy(&self) {
        self.with(|c| c.busy_rejections += 1);
    }

    pub fn prompt_sent(&self, chars: usize) {
        self.with(|c| c.max_prompt_chars_seen = c.max_prompt_chars_seen.max(chars));
    }

    pub fn report(
        &self,
        name: &str,
        limiter: LimiterSnapshot,
        prompt_budget_chars: usize,
    ) -> ModelReport {
        self.with(|c| {
            let mut sorted: Vec<u64> = c.latencies.iter().copied().collect();
            sorted.sort_unstable();
            ModelReport {
                name: name.to_string(),
                limit: limiter.limit,
                in_flight: limiter.in_flight,
                queued: limiter.queued,
                peak_in_flight: limiter.peak_in_flight,
                global_in_flight: None,
                global_limit_conflict: None,
                served: c.served,
                failures: c.failures,
                timeouts: c.timeouts,
                fallbacks: c.fallbacks,
                busy_rejections: c.busy_rejections,
                p50_ms: percentile(&sorted, 50),
                p95_ms: percentile(&sorted, 95),
                max_prompt_chars_seen: c.max_prompt_chars_seen,
                prompt_budget_chars,
                last_error: c.last_error.clone(),
                replica_retries: c.replica_retries,
                replicas: Vec::new(),
            }
        })
    }
}

/// Nearest-rank percentile of sorted samples; `None` without samples.
pub fn percentile(sorted: &[u64], pct: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn ring_is_bounded() {
        let s = ModelStats::default();
        for i in 0..(LATENCY_SAMPLES as u64 + 100) {
            s.served(i);
        }
        let r = s.report("m", LimiterSnapshot::default(), 10);
        assert_eq!(r.served, LATENCY_SAMPLES as u64 + 100);
        assert!(r.p50_ms.unwrap() >= 100, "old samples dropped");
    }
}
