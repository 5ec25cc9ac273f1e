//! Splitting long answers into chunks DingTalk accepts (spec §8): session-webhook bodies
//! ≤ 20 000 bytes, `msgParam` ≤ 15 000 bytes, markdown unreliable past ~3 500 chars.
//!
//! Invariant: every chunk is ≤ [`MAX_CHUNK_CHARS`] chars and its JSON-escaped form is
//! ≤ [`MAX_CHUNK_ESCAPED_BYTES`] bytes (so even double-encoded `msgParam` fits), chunks are
//! cut on char boundaries (preferring line breaks, then spaces), and their concatenation
//! (modulo the whitespace at cut points) is the input.

/// Most characters per chunk.
pub const MAX_CHUNK_CHARS: usize = 3_500;
/// Most bytes of a chunk once JSON-escaped (twice-escaped stays under 15 000 for normal text).
pub const MAX_CHUNK_ESCAPED_BYTES: usize = 6_000;

/// Splits `text` into sendable chunks; empty input gives one empty chunk.
pub fn split_text(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = fit(rest);
        let (head, tail) = rest.split_at(cut);
        let chunk = head.trim_end();
        if !chunk.is_empty() {
            chunks.push(chunk.to_string());
        }
        rest = tail.trim_start_matches(['\n', ' ']);
    }
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    chunks
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
    fn quotes_count_double() {
        let s = "\"".repeat(5_000);
        for c in split_text(&s) {
            assert!(serde_json::to_string(&c).unwrap().len() <= MAX_CHUNK_ESCAPED_BYTES + 2);
        }
    }
}
