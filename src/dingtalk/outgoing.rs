//! A reply on its way to DingTalk: the answer split into parts (made by
//! [`Channel::outgoing`](super::Channel::outgoing)) and how many of them DingTalk already took, so a retry resumes where the last try
//! stopped instead of sending the first parts again.
//!
//! Invariant: `sent <= parts.len()`, and it only grows (one part at a time, after DingTalk
//! accepted that part).

use super::limiter::SendPriority;

/// Called with the number of parts sent after each part DingTalk accepted (the bot
/// records it in its journal, so a restart resumes after it).
pub type SentHook = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

/// The parts of one reply and the delivery progress.
#[derive(Clone)]
pub struct OutgoingReply {
    parts: Vec<String>,
    sent: usize,
    markdown: bool,
    on_sent: Option<SentHook>,
    priority: SendPriority,
}

impl std::fmt::Debug for OutgoingReply {
    // Parts are message text: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingReply")
            .field("parts", &self.parts.len())
            .field("sent", &self.sent)
            .field("markdown", &self.markdown)
            .finish()
    }
}

impl OutgoingReply {
    /// A reply of these sendable parts, none sent yet.
    pub fn from_parts(parts: Vec<String>, markdown: bool) -> OutgoingReply {
        OutgoingReply::resume(parts, markdown, 0)
    }

    /// A reply of these parts of which the first `sent` were delivered already (by a
    /// previous run, as its journal recorded).
    pub fn resume(parts: Vec<String>, markdown: bool, sent: usize) -> OutgoingReply {
        OutgoingReply {
            sent: sent.min(parts.len()),
            parts,
            markdown,
            on_sent: None,
            priority: SendPriority::Answer,
        }
    }

    /// Sent only while no answer waits for a send slot (a busy reply; see
    /// [`SendPriority::Yield`]).
    pub fn yielding(mut self) -> OutgoingReply {
        self.priority = SendPriority::Yield;
        self
    }

    pub fn priority(&self) -> SendPriority {
        self.priority
    }

    /// Calls `hook` with the count of parts sent after every part DingTalk accepts.
    pub fn on_sent(&mut self, hook: SentHook) {
        self.on_sent = Some(hook);
    }

    /// Every part, sent or not.
    pub fn part_texts(&self) -> &[String] {
        &self.parts
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
        if self.sent < self.parts.len() {
            self.sent += 1;
            if let Some(hook) = &self.on_sent {
                hook(self.sent);
            }
        }
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

    #[test]
    fn a_resumed_reply_starts_after_its_sent_parts_and_reports_each_new_one() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut r = OutgoingReply::resume(vec!["a".into(), "b".into(), "c".into()], true, 1);
        let log = seen.clone();
        r.on_sent(std::sync::Arc::new(move |n| log.lock().unwrap().push(n)));
        assert_eq!(r.next_part(), Some("b"));
        r.mark_sent();
        r.mark_sent();
        r.mark_sent();
        assert_eq!(*seen.lock().unwrap(), [2, 3]);
        assert!(OutgoingReply::resume(vec!["a".into()], false, 9).is_done());
    }
}
