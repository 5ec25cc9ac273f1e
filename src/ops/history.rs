//! A small ring of per-model load samples (slots in use, queue depth) for the status
//! page's chart.
//!
//! Invariant: at most [`SAMPLES`] samples are kept, one per [`SAMPLE_EVERY`] (15 minutes).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::status::ModelReport;

/// How often a sample is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept.
pub(crate) const SAMPLES: usize = 180;

/// One model's load at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ModelLoad {
    pub(crate) model: String,
    pub(crate) in_flight: usize,
    pub(crate) queued: usize,
}

/// Every model's load at `t_ms` (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_ms: u64,
    pub(crate) models: Vec<ModelLoad>,
}

#[derive(Debug, Default)]
pub(crate) struct History {
    ring: Mutex<VecDeque<Sample>>,
}

impl History {
    pub(crate) fn record(&self, t_ms: u64, models: &[ModelReport]) {
        let sample = Sample {
            t_ms,
            models: models
                .iter()
                .map(|m| ModelLoad {
                    model: m.name.clone(),
                    in_flight: m.in_flight,
                    queued: m.queued,
                })
                .collect(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == SAMPLES {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_samples() {
        let h = History::default();
        let m = ModelReport {
            name: "m".into(),
            in_flight: 1,
            queued: 2,
            ..Default::default()
        };
        for t in 0..(SAMPLES as u64 + 10) {
            h.record(t, std::slice::from_ref(&m));
        }
        let s = h.samples();
        assert_eq!(s.len(), SAMPLES);
        assert_eq!(s[0].t_ms, 10);
        assert_eq!(s.last().unwrap().models[0].queued, 2);
    }
}
