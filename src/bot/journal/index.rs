//! What the journal knows about message ids: the ones accepted and not yet answered
//! (pending, in arrival order, with their encoded record for compaction) and the bounded
//! set of answered ones.
//!
//! Invariants: an id is never both pending and done; the done set holds at most
//! [`DONE_KEEP`] ids (oldest forgotten first); `live_bytes` is the size of the records a
//! compaction would keep.
//!
//! Memory: each answered id is kept once as a string (for compaction to write it back)
//! and looked up by its 128-bit keyed fingerprint ([`IdDigest`], see there for why a
//! false "already answered" is not a practical risk).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::record::completion_reserve;
use crate::message_digest::IdDigest;

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
    /// Answered ids, oldest first.
    done_order: VecDeque<Box<str>>,
    /// The fingerprints of `done_order`, each once.
    done: HashSet<IdDigest>,
    /// Recorded replies of pending ids.
    replies: HashMap<String, RecordedReply>,
    reply_bytes: usize,
    /// Sum of the pending ids' [`completion_reserve`]s.
    reserved: u64,
}

/// A pending message's reply as recorded before its first part was sent, and how many
/// parts DingTalk accepted since.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordedReply {
    pub(crate) parts: Vec<String>,
    pub(crate) markdown: bool,
    pub(crate) sent: usize,
}

impl RecordedReply {
    /// Rough size of its records (for the live-bytes estimate).
    fn weight(&self) -> usize {
        self.parts.iter().map(String::len).sum::<usize>() + 2 * DONE_RECORD_ESTIMATE
    }
}

impl Index {
    /// True when `id` is pending or was answered.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.pending_seq.contains_key(id) || self.done.contains(&IdDigest::of(id))
    }

    pub(crate) fn add_pending(&mut self, id: String, encoded: Vec<u8>) {
        if self.knows(&id) {
            return;
        }
        self.next_seq += 1;
        self.reserved += completion_reserve(&id);
        self.pending_bytes += encoded.len();
        self.pending_seq.insert(id.clone(), self.next_seq);
        self.pending.insert(self.next_seq, (id, encoded));
    }

    /// Records the reply of a pending id (ignored for any other id).
    pub(crate) fn set_reply(&mut self, id: &str, parts: Vec<String>, markdown: bool) {
        if !self.is_pending(id) {
            return;
        }
        let reply = RecordedReply {
            parts,
            markdown,
            sent: 0,
        };
        self.reply_bytes += reply.weight();
        if let Some(old) = self.replies.insert(id.to_string(), reply) {
            self.reply_bytes -= old.weight();
        }
    }

    /// Records that the first `n` parts of `id`'s reply were sent (never going back).
    pub(crate) fn set_sent(&mut self, id: &str, n: usize) {
        if let Some(r) = self.replies.get_mut(id) {
            r.sent = r.sent.max(n.min(r.parts.len()));
        }
    }

    pub(crate) fn reply_of(&self, id: &str) -> Option<&RecordedReply> {
        self.replies.get(id)
    }

    /// Recorded replies of pending ids.
    pub(crate) fn replies(&self) -> impl Iterator<Item = (&str, &RecordedReply)> {
        self.replies.iter().map(|(id, r)| (id.as_str(), r))
    }

    pub(crate) fn is_pending(&self, id: &str) -> bool {
        self.pending_seq.contains_key(id)
    }

    /// Drops a pending id whose record turned out not durable.
    pub(crate) fn forget_pending(&mut self, id: &str) {
        if let Some(r) = self.replies.remove(id) {
            self.reply_bytes -= r.weight();
        }
        if let Some(seq) = self.pending_seq.remove(id) {
            self.reserved -= completion_reserve(id);
            if let Some((_, bytes)) = self.pending.remove(&seq) {
                self.pending_bytes -= bytes.len();
            }
        }
    }

    /// Marks `id` answered (pending or not).
    pub(crate) fn mark_done(&mut self, id: &str) {
        self.forget_pending(id);
        if self.done.insert(IdDigest::of(id)) {
            self.done_order.push_back(id.into());
            while self.done_order.len() > DONE_KEEP {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&IdDigest::of(&old));
                }
            }
        }
    }

    /// Bytes the file must keep free for the pending ids' completion records.
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Encoded pending records, oldest first.
    pub(crate) fn pending_records(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.values().map(|(_, b)| b.as_slice())
    }

    /// Pending ids, oldest first.
    pub(crate) fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.pending.values().map(|(id, _)| id.as_str())
    }

    /// Answered ids, oldest first.
    pub(crate) fn done_ids(&self) -> impl Iterator<Item = &str> {
        self.done_order.iter().map(|id| &**id)
    }

    /// Roughly what a compacted journal would weigh.
    pub(crate) fn live_bytes(&self) -> usize {
        self.pending_bytes + self.reply_bytes + self.done_order.len() * DONE_RECORD_ESTIMATE
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
        assert_eq!(ix.done.len(), DONE_KEEP, "fingerprints outlive their ids");
        assert!(ix.knows("x5") && ix.knows(&format!("x{}", DONE_KEEP + 4)));
        assert!(
            !ix.knows("x4") && !ix.knows("x"),
            "oldest forgotten, others unknown"
        );
        assert_eq!(ix.done_ids().next(), Some("x5"), "oldest first");
    }
}
