//! An incremental Server-Sent Events decoder, tolerant of what real model servers send:
//! `\n` or `\r\n` line ends, comment lines (`:` and `: ping - ...`), unknown fields, and
//! events split anywhere across network chunks (even inside a UTF-8 character).
//!
//! Invariant: the decoder holds at most [`MAX_EVENT_BYTES`] of undispatched input; a
//! longer line or event is an error instead of unbounded memory.

/// Largest event (or single line) accepted.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One decoded item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// The joined `data:` lines of one event.
    Data(String),
    /// A comment line (keepalive ping). Reported so callers can ignore it explicitly.
    Comment,
}

/// Input the decoder refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (its pending line and `data:` lines) outgrew [`MAX_EVENT_BYTES`].
    #[error("SSE event larger than {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes not yet forming a whole line.
    pending: Vec<u8>,
    /// `data:` lines of the event being built.
    data: Vec<String>,
    data_bytes: usize,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds received bytes and returns the items completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseItem>, SseError> {
        self.pending.extend_from_slice(bytes);
        let mut items = Vec::new();
        let mut start = 0;
        while let Some(rel) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + rel;
            let mut line = &self.pending[start..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut items);
        }
        self.pending.drain(..start);
        if self.pending.len() + self.data_bytes > MAX_EVENT_BYTES {
            return Err(SseError::EventTooLarge);
        }
        Ok(items)
    }

    /// Ends the input: an event left without its closing blank line is still delivered.
    pub fn finish(&mut self) -> Option<SseItem> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let line =
                String::from_utf8_lossy(rest.strip_suffix(b"\r").unwrap_or(&rest)).into_owned();
            // A final partial line can only add data.
            self.line(&line, &mut Vec::new());
        }
        self.dispatch()
    }

    fn line(&mut self, line: &str, items: &mut Vec<SseItem>) {
        if line.is_empty() {
            if let Some(item) = self.dispatch() {
                items.push(item);
            }
        } else if line.starts_with(':') {
            items.push(SseItem::Comment);
        } else {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            if field == "data" {
                self.data_bytes += value.len();
                self.data.push(value.to_string());
            }
            // `event`, `id`, `retry` and unknown fields carry nothing we use.
        }
    }

    fn dispatch(&mut self) -> Option<SseItem> {
        if self.data.is_empty() {
            return None;
        }
        let joined = self.data.join("\n");
        self.data.clear();
        self.data_bytes = 0;
        Some(SseItem::Data(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.feed(c).expect("feed"));
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn lf_crlf_comments_and_split_chunks() {
        let items = all(&[
            b"data: {\"a\":1}\n\n: ping - 2024\r\n\r\nda",
            b"ta: x\r\n",
            b"\r\n:\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            items,
            vec![
                SseItem::Data("{\"a\":1}".into()),
                SseItem::Comment,
                SseItem::Data("x".into()),
                SseItem::Comment,
                SseItem::Data("[DONE]".into()),
            ]
        );
    }

    #[test]
    fn multi_line_data_and_unknown_fields() {
        let items = all(&[b"event: message\nid: 3\ndata: a\ndata:b\nretry: 5\n\n"]);
        assert_eq!(items, vec![SseItem::Data("a\nb".into())]);
    }

    #[test]
    fn utf8_split_across_chunks_and_unterminated_tail() {
        let s = "data: 你好\n\ndata: end".as_bytes();
        let items = all(&[&s[..8], &s[8..]]);
        assert_eq!(
            items,
            vec![SseItem::Data("你好".into()), SseItem::Data("end".into())]
        );
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut d = SseDecoder::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(d.feed(&big).is_err());
    }
}
