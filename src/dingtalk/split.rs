//! Splitting long answers into chunks DingTalk accepts (docs/dingtalk-protocol.md §8):
//! session-webhook bodies ≤ 20 000 bytes, `msgParam` ≤ 15 000 bytes, markdown unreliable past ~3
//! 500 chars.
//!
//! Invariant: every chunk is ≤ [`MAX_CHUNK_CHARS`] chars and its JSON-escaped form is
//! ≤ [`MAX_CHUNK_ESCAPED_BYTES`] bytes (so even double-encoded `msgParam` fits), chunks are
//! cut on char boundaries (preferring line breaks, then spaces), and their concatenation
//! (modulo the whitespace at cut points) is the input.

use crate::model::ANSWER_CUT_MARK;

/// Most characters per chunk.
pub const MAX_CHUNK_CHARS: usize = 3_500;
/// Most bytes of a chunk once JSON-escaped (twice-escaped stays under 15 000 for normal text).
pub const MAX_CHUNK_ESCAPED_BYTES: usize = 6_000;

/// Splits `text` into sendable chunks; empty input gives one empty chunk.
pub fn split_text(text: &str) -> Vec<String> {
    let chunks: Vec<String> = chunks(text).collect();
    if chunks.is_empty() {
        vec![String::new()]
    } else {
        chunks
    }
}

/// Like [`split_text`], but never more than `max_parts` (at least 1) chunks: when the text
/// needs more, the rest is dropped and the last chunk ends with [`ANSWER_CUT_MARK`], still
/// within the chunk limits. Splits no further than needed, so a huge text costs little.
pub fn split_bounded(text: &str, max_parts: usize) -> Vec<String> {
    let max_parts = max_parts.max(1);
    let mut parts: Vec<String> = chunks(text).take(max_parts + 1).collect();
    if parts.is_empty() {
        parts.push(String::new());
    }
    if parts.len() > max_parts {
        parts.truncate(max_parts);
        if let Some(last) = parts.last_mut() {
            let mark_cost: usize = ANSWER_CUT_MARK.chars().map(escaped_len).sum();
            while last.chars().count() + ANSWER_CUT_MARK.chars().count() > MAX_CHUNK_CHARS
                || last.chars().map(escaped_len).sum::<usize>() + mark_cost
                    > MAX_CHUNK_ESCAPED_BYTES
            {
                last.pop();
            }
            last.push_str(ANSWER_CUT_MARK);
        }
    }
    parts
}

/// The non-empty chunks of `text`, in order, cut lazily.
fn chunks(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(fit(rest));
            rest = tail.trim_start_matches(['\n', ' ']);
            let chunk = head.trim_end();
            if !chunk.is_empty() {
                return Some(chunk.to_string());
            }
        }
        None
    })
}

/// Byte length of the longest allowed prefix of `s`, cut at a nice boundary.
fn fit(s: &str) -> usize {
    let mut end = 0;
    let mut escaped = 0;
    for (chars, (i, c)) in s.char_indices().enumerate() {
        let cost = escaped_len(c);
        if chars >= MAX_CHUNK_CHARS || escaped + cost > MAX_CHUNK_ESCAPED_BYTES {
            break;
        }
        escaped += cost;
        end = i + c.len_utf8();
    }
    if end >= s.len() {
        return s.len();
    }
    let head = &s[..end];
    let min = end / 2;
    head.rfind('\n')
        .filter(|&i| i > min)
        .or_else(|| head.rfind(' ').filter(|&i| i > min))
        .map(|i| i + 1)
        .unwrap_or(end)
        .max(1)
}

fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_text("hello"), vec!["hello".to_string()]);
        assert_eq!(split_text(""), vec![String::new()]);
    }

    #[test]
    fn long_text_respects_limits_and_keeps_content() {
        let para = "第一行 some words here\n".repeat(2_000);
        let chunks = split_text(&para);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(c.chars().count() <= MAX_CHUNK_CHARS);
            assert!(serde_json::to_string(c).unwrap().len() <= MAX_CHUNK_ESCAPED_BYTES + 2);
        }
        let joined: String = chunks.join("\n");
        assert_eq!(joined.replace('\n', ""), para.trim_end().replace('\n', ""));
    }

    #[test]
    fn no_boundary_still_splits_on_char_boundaries() {
        let s = "é".repeat(10_000);
        let chunks = split_text(&s);
        assert_eq!(chunks.concat(), s);
    }

    #[test]
    fn bounded_split_keeps_at_most_max_parts_and_marks_the_cut() {
        let long = "word ".repeat(20_000);
        let all = split_text(&long);
        assert!(all.len() > 4);
        let parts = split_bounded(&long, 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[..3], all[..3]);
        assert!(parts[3].ends_with(ANSWER_CUT_MARK));
        for p in &parts {
            assert!(p.chars().count() <= MAX_CHUNK_CHARS);
            assert!(serde_json::to_string(p).unwrap().len() <= MAX_CHUNK_ESCAPED_BYTES + 2);
        }
        // A full last chunk with no boundary still makes room for the mark.
        let parts = split_bounded(&"\"".repeat(20_000), 2);
        assert_eq!(parts.len(), 2);
        assert!(serde_json::to_string(&parts[1]).unwrap().len() <= MAX_CHUNK_ESCAPED_BYTES + 2);
        assert_eq!(split_bounded("short", 1), vec!["short".to_string()]);
        assert_eq!(split_bounded("", 0), vec![String::new()]);
        assert_eq!(split_bounded(&long, 0).len(), 1);
    }

    #[test]
    fn quotes_count_double() {
        let s = "\"".repeat(5_000);
        for c in split_text(&s) {
            assert!(serde_json::to_string(&c).unwrap().len() <= MAX_CHUNK_ESCAPED_BYTES + 2);
        }
    }
}
