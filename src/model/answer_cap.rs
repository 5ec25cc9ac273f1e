//! The answer cap (`reply.max_answer_chars`), applied while the answer streams in.
//!
//! Invariant: a [`CappedText`] never holds more than its `max_chars` characters; once a
//! push would cross the cap, the text keeps what fits and ends with [`ANSWER_CUT_MARK`]
//! (which counts toward the cap), and every later push is refused, so the caller stops
//! reading the model at once.

/// Ends an answer that was cut at `reply.max_answer_chars`.
pub const ANSWER_CUT_MARK: &str = "…";

/// An answer being accumulated under a character cap.
#[derive(Debug)]
pub(crate) struct CappedText {
    text: String,
    chars: usize,
    max_chars: usize,
    cut: bool,
}

impl CappedText {
    /// An empty answer allowed `max_chars` characters (at least 1, for the mark).
    pub(crate) fn new(max_chars: usize) -> Self {
        CappedText {
            text: String::new(),
            chars: 0,
            max_chars: max_chars.max(1),
            cut: false,
        }
    }

    /// Appends `piece`; `false` when the cap was reached (now or before): the text then
    /// ends with the mark and the caller must stop reading.
    pub(crate) fn push(&mut self, piece: &str) -> bool {
        if self.cut {
            return false;
        }
        let piece_chars = piece.chars().count();
        if self.chars + piece_chars <= self.max_chars {
            self.text.push_str(piece);
            self.chars += piece_chars;
            return true;
        }
        // Keep what fits before the mark; at exactly the cap, the last character makes way.
        let keep = self.max_chars - 1;
        if self.chars > keep {
            if let Some((at, _)) = self.text.char_indices().nth(keep) {
                self.text.truncate(at);
            }
        } else {
            self.text.extend(piece.chars().take(keep - self.chars));
        }
        self.chars = keep;
        self.text.push_str(ANSWER_CUT_MARK);
        self.chars += 1;
        self.cut = true;
        false
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the cap cut the answer.
    pub(crate) fn is_cut(&self) -> bool {
        self.cut
    }

    pub(crate) fn into_string(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_marks_the_cut() {
        let mut t = CappedText::new(10);
        assert!(t.push("héllo"));
        assert!(t.push("12345"), "exactly at the cap is not a cut");
        assert!(!t.is_cut());
        assert!(!t.push("x"));
        assert_eq!(t.as_str(), "héllo1234…");
        assert!(!t.push("more"), "nothing after the cut");
        assert_eq!(t.as_str().chars().count(), 10);

        let mut t = CappedText::new(5);
        assert!(!t.push("abcdefgh"));
        assert_eq!(t.into_string(), "abcd…");
        let mut t = CappedText::new(1);
        assert!(!t.push("ab"));
        assert_eq!(t.as_str(), "…");
    }
}
