//! Where a key path (`models.m.replicas[0].max_concurrency`) sits in the config text, for
//! the errors found after loading (a value that is wrong given the rest of the file), so
//! they name a line and column like the loader's own errors.
//!
//! Hand-written: the YAML loader keeps no positions once a document is loaded. Only block
//! style (one key per line, `- ` items) is followed, which is how configs are written;
//! for anything else (flow style, anchors, keys split over lines) the answer is `None`
//! and the error keeps its key path alone. Invariant: a position returned is the start
//! of a line whose key (or `- ` item) is the path's last segment, inside the blocks of
//! every earlier segment.

/// One step of a key path.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` as segments; `None` when a bracket is malformed.
fn segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            out.push(Segment::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// Whether `content` (a line without its indent) is the key `key`, plain or quoted.
fn is_key(content: &str, key: &str) -> bool {
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            content
                .strip_prefix(k.as_str())
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
}

/// Where `path` is written, or else its nearest written parent (a missing key is
/// reported at the section that lacks it: `state.redis` at `state:`).
pub(super) fn locate_or_parent(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut path = path;
    // Bounded: each round drops one segment.
    loop {
        if let Some(at) = locate(text, path) {
            return Some(at);
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// The 1-based line and column where `path` is written in `text`, if it can be followed.
pub(super) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segments = segments(path)?;
    let mut next = segments.iter().peekable();
    // Indent of the block the next segment must be a direct child of (-1: the document).
    let mut parent: isize = -1;
    // Indent of that block's children, learnt from its first line.
    let mut children: Option<isize> = None;
    // Items of the current block seen so far (for an `Index` segment).
    let mut items_before = 0usize;
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut indent = (line.len() - content.len()) as isize;
        let mut content = content;
        loop {
            let segment = next.peek()?;
            // A sequence may sit at its key's own indent (`key:\n- item`).
            let is_item = content.starts_with("- ") || content == "-";
            let item_at_key_indent = is_item && parent >= 0 && matches!(segment, Segment::Index(_));
            if indent < parent || (indent == parent && !item_at_key_indent) {
                return None; // left the block without finding the segment
            }
            let expected = *children.get_or_insert(indent);
            if indent > expected {
                break; // deeper: inside a sibling
            }
            if indent < expected {
                return None; // out of the block (or not block style)
            }
            let found = match segment {
                Segment::Key(key) => is_key(content, key),
                Segment::Index(wanted) if is_item => {
                    items_before += 1;
                    items_before - 1 == *wanted
                }
                Segment::Index(_) => false,
            };
            if !found {
                break;
            }
            next.next();
            if next.peek().is_none() {
                return Some((number + 1, indent as usize + 1));
            }
            parent = indent;
            children = None;
            items_before = 0;
            if is_item {
                // The item's first key may sit on the same line, after `- `.
                content = content[1..].trim_start_matches(' ');
                indent = (line.len() - content.len()) as isize;
                if content.is_empty() {
                    break;
                }
                continue;
            }
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items_in_block_style() {
        let text = "models:\n  a:\n    replicas:\n      - base_url: x\n        max_concurrency: 2\n  \
                    b:\n    replicas:\n    - base_url: y\n    - base_url: z\n      max_concurrency: 9\n\
                    limits:\n  max_concurrency_per_model:\n    b: 1\n";
        assert_eq!(
            locate(text, "models.a.replicas[0].max_concurrency"),
            Some((5, 9))
        );
        assert_eq!(locate(text, "models.a.replicas[0].base_url"), Some((4, 9)));
        assert_eq!(
            locate(text, "models.b.replicas[1].max_concurrency"),
            Some((10, 7))
        );
        assert_eq!(locate(text, "models.b.replicas[1]"), Some((9, 5)));
        assert_eq!(
            locate(text, "limits.max_concurrency_per_model.b"),
            Some((13, 5))
        );
        assert_eq!(locate(text, "models.b.replicas[0].max_concurrency"), None);
        assert_eq!(locate(text, "models.c"), None);
        assert_eq!(locate("models: {a: 1}", "models.a"), None, "flow style");
        assert_eq!(locate(text, "models.a.replicas[x]"), None);
    }
}
