//! Counts busy replies by the wait that caused them, for `status`.
//!
//! Invariant: every busy reply the pipeline decides on is counted here exactly once,
//! under one cause, and then either under `replies_total{outcome="busy"}` once delivered
//! or as not sent (DingTalk did not take it within the delivery limit; not retried).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::status::BusyReport;

/// Why a turn got `reply.busy_text`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BusyCause {
    /// Waited behind its conversation's earlier turns too long.
    BehindConversation,
    /// Its conversation's line was full (`limits.queue.max_waiting` turns waiting).
    LineFull,
    /// The model's queue was full or the wait for a slot ran out.
    ModelQueue,
}

#[derive(Debug, Default)]
pub(crate) struct BusyReplies {
    behind_conversation: AtomicU64,
    line_full: AtomicU64,
    model_queue: AtomicU64,
    not_sent: AtomicU64,
}

impl BusyReplies {
    pub(crate) fn count(&self, cause: BusyCause) {
        let counter = match cause {
            BusyCause::BehindConversation => &self.behind_conversation,
            BusyCause::LineFull => &self.line_full,
            BusyCause::ModelQueue => &self.model_queue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A busy reply DingTalk did not take within the delivery limit.
    pub(crate) fn not_sent(&self) {
        self.not_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self) -> BusyReport {
        let behind_conversation = self.behind_conversation.load(Ordering::Relaxed);
        let line_full = self.line_full.load(Ordering::Relaxed);
        let model_queue = self.model_queue.load(Ordering::Relaxed);
        BusyReport {
            total: behind_conversation + line_full + model_queue,
            behind_conversation,
            line_full,
            model_queue,
            not_sent: self.not_sent.load(Ordering::Relaxed),
        }
    }
}
