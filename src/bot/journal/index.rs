//! What the journal knows about message ids: the ones accepted and not yet answered
//! (pending, in arrival order, with their encoded record for compaction) and the bounded
//! set of answered ones.
//!
//! Invariants: an id is never both pending and done; the done set holds at most
//! [`DONE_KEEP`] ids (oldest forgotten first); `live_bytes` is the size of the records a
//! compaction would keep.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Answered ids remembered (in memory and across restarts) to refuse redeliveries.
pub(crate) const DONE_KEEP: usize = 10_000;

/// The size of a Done record of an average id, for the live-bytes estimate.
const DONE_RECORD_ESTIMATE: usize = 48;

#[derive(Default)]
pub(crate) struct Index {
    next_seq: u64,
    /// Pending records in arrival order: seq -> (id, encoded record).
    pending: BTreeMap<u64, (String, Vec<u8>)>,
    pending_seq: HashMap<String, u64>,
    pending_bytes: usize,
    done_order: VecDeque<String>,
    done: HashSet<String>,
}

impl Index {
    /// True when `id` is pending or was answered.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.pending_seq.contains_key(id) || self.done.contains(id)
    }

    pub(crate) fn is_pending(&self, id: &str) -> bool {
        self.pending_seq.contains_key(id)
    }

    pub(crate) fn add_pending(&mut self, id: String, encoded: Vec<u8>) {
        if self.knows(&id) {
            return;
        }
        self.next_seq += 1;
        self.pending_bytes += encoded.len();
        self.pending_seq.insert(id.clone(), self.next_seq);
        self.pending.insert(self.next_seq, (id, encoded));
    }

    /// Drops a pending id whose record turned out not durable.
    pub(crate) fn forget_pending(&mut self, id: &str) {
        if let Some(seq) = self.pending_seq.remove(id) {
            if let Some((_, bytes)) = self.pending.remove(&seq) {
                self.pending_bytes -= bytes.len();
            }
        }
    }

    /// Marks `id` answered (pending or not).
    pub(crate) fn mark_done(&mut self, id: &str) {
        self.forget_pending(id);
        if self.done.insert(id.to_string()) {
            self.done_order.push_back(id.to_string());
            while self.done_order.len() > DONE_KEEP {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
        }
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Encoded pending records, oldest first.
    pub(crate) fn pending_records(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.values().map(|(_, b)| b.as_slice())
    }

    /// Answered ids, oldest first.
    pub(crate) fn done_ids(&self) -> impl Iterator<Item = &str> {
        self.done_order.iter().map(String::as_str)
    }

    /// Roughly what a compacted journal would weigh.
    pub(crate) fn live_bytes(&self) -> usize {
        self.pending_bytes + self.done_order.len() * DONE_RECORD_ESTIMATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_then_done_and_bounded() {
        let mut ix = Index::default();
        ix.add_pending("a".into(), vec![1, 2, 3]);
        ix.add_pending("b".into(), vec![4]);
        ix.add_pending("a".into(), vec![9; 100]);
        assert_eq!(ix.pending_count(), 2);
        assert_eq!(
            ix.pending_records().collect::<Vec<_>>(),
            vec![&[1, 2, 3][..], &[4][..]]
        );
        ix.mark_done("a");
        assert!(ix.knows("a") && ix.knows("b"));
        assert_eq!(ix.pending_count(), 1);
        ix.add_pending("a".into(), vec![1]);
        assert_eq!(ix.pending_count(), 1, "an answered id came back as pending");
        for i in 0..DONE_KEEP + 5 {
            ix.mark_done(&format!("x{i}"));
        }
        assert!(!ix.knows("a"), "done set is not bounded");
        assert_eq!(ix.done_ids().count(), DONE_KEEP);
    }
}
