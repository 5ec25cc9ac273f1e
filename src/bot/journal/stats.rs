//! Live figures of the journal, shared between its writer thread and `daemon status`.
//! Counters, error texts with paths, and the measured reply -> "answered" window; never
//! message text.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::status::JournalReport;

/// Window samples kept for the percentiles.
const WINDOW_SAMPLES: usize = 4096;

pub(crate) struct JournalStats {
    pub(crate) path: PathBuf,
    pub(crate) pending: AtomicUsize,
    /// Syncs run for waiting requests or lazily written records.
    pub(crate) commits: AtomicU64,
    /// Request batches the journal thread served: one wake-up of it each.
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) failed_accepts: AtomicU64,
    pub(crate) done_retry_queue: AtomicUsize,
    pub(crate) compactions: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Reply accepted -> Done record written, in microseconds (most recent last).
    done_window_us: Mutex<VecDeque<u64>>,
}

impl JournalStats {
    pub(crate) fn new(path: PathBuf) -> JournalStats {
        JournalStats {
            path,
            pending: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            failed_accepts: AtomicU64::new(0),
            done_retry_queue: AtomicUsize::new(0),
            compactions: AtomicU64::new(0),
            last_error: Mutex::new(None),
            done_window_us: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub(crate) fn clear_error(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn record_window(&self, window: Duration) {
        let mut w = self
            .done_window_us
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if w.len() == WINDOW_SAMPLES {
            w.pop_front();
        }
        w.push_back(window.as_micros().min(u64::MAX as u128) as u64);
    }

    pub(crate) fn report(&self) -> JournalReport {
        let mut window: Vec<u64> = self
            .done_window_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        window.sort_unstable();
        let pct = |p: usize| -> Option<u64> {
            (!window.is_empty()).then(|| window[((window.len() - 1) * p) / 100])
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        JournalReport {
            path: self.path.display().to_string(),
            pending: self.pending.load(Ordering::Relaxed),
            commits: get(&self.commits),
            records: get(&self.records),
            failed_accepts: get(&self.failed_accepts),
            done_retry_queue: self.done_retry_queue.load(Ordering::Relaxed),
            compactions: get(&self.compactions),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            done_window_us_p50: pct(50),
            done_window_us_p99: pct(99),
            done_window_us_max: window.last().copied(),
        }
    }
}
