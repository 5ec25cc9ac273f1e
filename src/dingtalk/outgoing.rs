//! A reply on its way to DingTalk: the answer split into parts (made by
//! [`Channel::outgoing`](super::Channel::outgoing)) and how many of them DingTalk already took, so a retry resumes where the last try
//! stopped instead of sending the first parts again.
//!
//! Invariant: `sent <= parts.len()`, and it only grows (one part at a time, after DingTalk
//! accepted that part).

/// The parts of one reply and the delivery progress.
#[derive(Debug, Clone)]
pub struct OutgoingReply {
    parts: Vec<String>,
    sent: usize,
    markdown: bool,
}

impl OutgoingReply {
    /// A reply of these sendable parts, none sent yet.
    pub fn from_parts(parts: Vec<String>, markdown: bool) -> OutgoingReply {
        OutgoingReply {
            parts,
            sent: 0,
            markdown,
        }
    }

    pub fn markdown(&self) -> bool {
        self.markdown
    }

    /// The next part to send, if any is left.
    pub fn next_part(&self) -> Option<&str> {
        self.parts.get(self.sent).map(String::as_str)
    }

    /// Records that DingTalk accepted the part [`next_part`](Self::next_part) returned.
    pub fn mark_sent(&mut self) {
        self.sent = (self.sent + 1).min(self.parts.len());
    }

    /// Parts DingTalk accepted so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    pub fn is_done(&self) -> bool {
        self.sent == self.parts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_resumes_at_the_first_unsent_part_and_never_passes_the_end() {
        let mut r = OutgoingReply::from_parts(vec!["a".repeat(10), "b".repeat(10)], false);
        assert_eq!(r.parts(), 2);
        assert!(r.next_part().unwrap().starts_with('a'));
        r.mark_sent();
        assert!(r.next_part().unwrap().starts_with('b'));
        assert!(!r.is_done());
        r.mark_sent();
        r.mark_sent();
        assert!(r.is_done());
        assert_eq!(r.sent(), 2);
        assert_eq!(r.next_part(), None);
    }
}
