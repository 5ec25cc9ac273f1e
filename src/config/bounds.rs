//! Cheap structural limits checked before the YAML is deserialized.
//!
//! Why: libyaml's scanner walks its whole stack of open flow collections for every token,
//! so `[[[[...` nested 100 000 deep costs O(depth²) (15 s of CPU for 200 KB), and
//! `yaml_serde` scans the whole document before its own recursion limit can say no.
//! [`check`] walks the same parser's events itself and stops at the first collection
//! deeper than [`MAX_DEPTH`]: the scanner never holds more than `MAX_DEPTH` open levels,
//! so the walk is linear in the input. It also adds up the size of the document with
//! every alias expanded and stops past [`MAX_EXPANDED_NODES`] (an alias bomb).
//!
//! Invariant: a document that passes has at most `MAX_DEPTH` nested collections and at
//! most `MAX_EXPANDED_NODES` nodes once aliases are expanded. Syntax errors are not
//! reported here: the walk stops and the deserializer reports them with its own words.
//!
//! Hand-written over `libyaml-rs` (the parser `yaml_serde` itself uses) because neither
//! crate exposes an event stream or a depth limit that applies while scanning.
//!
//! Why this module keeps `unsafe` (libyaml-rs is a C translation with a C API: raw
//! parser, unions, C strings): the walk must see the very events the deserializer will
//! get. A safe parser with marks (`saphyr-parser`, `yaml-rust2`) is another grammar: on
//! input it rejects early but libyaml accepts, the walk would stop ("syntax errors are
//! left to the deserializer") and pass a document whose tail then reaches libyaml's
//! quadratic scan or its aliases unbounded. The unsafe part is confined to [`Parser`]
//! (init, next event, delete) and the two readers of an event ([`convert`], [`anchor`]);
//! `tests/fuzz_parsers.rs` drives [`check`] with arbitrary text.

use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

/// Deepest nesting of sequences and mappings accepted (the real schema needs 5).
pub(crate) const MAX_DEPTH: usize = 64;

/// Most nodes a document may have once every alias is expanded; well above what a file
/// of the 1 MiB size cap can spell out without aliases.
pub(crate) const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// A document over a structural limit, with where (1-based line and column).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoundsError {
    #[error("line {line}, column {column}: nesting is deeper than {MAX_DEPTH} levels")]
    TooDeep { line: u64, column: u64 },
    #[error(
        "line {line}, column {column}: aliases expand the document past {MAX_EXPANDED_NODES} nodes"
    )]
    TooManyNodes { line: u64, column: u64 },
}

/// Checks `text` against [`MAX_DEPTH`] and [`MAX_EXPANDED_NODES`].
pub(crate) fn check(text: &str) -> Result<(), BoundsError> {
    let mut parser = Parser::new(text.as_bytes());
    let mut walk = Walk::default();
    // Every event consumes input or closes something opened before: a bound that a
    // well-behaved parser never reaches.
    let max_events = text.len().saturating_mul(4).saturating_add(16);
    for _ in 0..max_events {
        let Some(event) = parser.next() else {
            return Ok(());
        };
        if !walk.step(event)? {
            return Ok(());
        }
    }
    Ok(())
}

/// One parser event, reduced to what the limits need.
enum Event {
    Open { anchor: Option<Vec<u8>> },
    Close,
    Scalar { anchor: Option<Vec<u8>> },
    Alias { anchor: Vec<u8> },
    Other,
    End,
}

struct Located {
    event: Event,
    line: u64,
    column: u64,
}

/// The running counts of a walk.
#[derive(Default)]
struct Walk {
    /// For each open collection: its anchor and the expanded count when it opened.
    open: Vec<(Option<Vec<u8>>, u64)>,
    /// Expanded size of each anchored node seen so far.
    anchors: HashMap<Vec<u8>, u64>,
    /// Nodes so far with aliases expanded.
    expanded: u64,
}

impl Walk {
    /// Takes one event; `Ok(false)` at the end of the stream.
    fn step(&mut self, at: Located) -> Result<bool, BoundsError> {
        let (line, column) = (at.line, at.column);
        match at.event {
            Event::Open { anchor } => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(BoundsError::TooDeep { line, column });
                }
                self.open.push((anchor, self.expanded));
                self.expanded += 1;
            }
            Event::Close => {
                if let Some((Some(anchor), start)) = self.open.pop() {
                    self.anchors.insert(anchor, self.expanded - start);
                }
            }
            Event::Scalar { anchor } => {
                if let Some(anchor) = anchor {
                    self.anchors.insert(anchor, 1);
                }
                self.expanded += 1;
            }
            Event::Alias { anchor } => {
                let size = self.anchors.get(&anchor).copied().unwrap_or(1);
                self.expanded = self.expanded.saturating_add(size);
            }
            Event::Other => {}
            Event::End => return Ok(false),
        }
        if self.expanded > MAX_EXPANDED_NODES {
            return Err(BoundsError::TooManyNodes { line, column });
        }
        Ok(true)
    }
}

/// A libyaml parser over borrowed input.
///
/// Invariant: `sys` is boxed and never moves after `yaml_parser_set_input_string`
/// (libyaml keeps a pointer to the parser itself as the read handler's data), and
/// `input` outlives it (the parser reads from it until deleted).
struct Parser<'a> {
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    _input: &'a [u8],
    /// Set after an error or the end: libyaml must not be asked again.
    done: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Parser<'a> {
        let mut sys = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        let p = sys.as_mut_ptr();
        // SAFETY: `p` points at boxed memory the size of a parser; initialize fills it
        // (it only fails when memory allocation fails, which aborts in this build of
        // libyaml). The input slice outlives the parser (the `'a` borrow).
        let done = unsafe {
            let failed = sys::yaml_parser_initialize(p).fail;
            if !failed {
                sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
                sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as _);
            }
            failed
        };
        Parser {
            sys,
            _input: input,
            done,
        }
    }

    /// The next event; `None` after the end or a syntax error.
    fn next(&mut self) -> Option<Located> {
        if self.done {
            return None;
        }
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and has not failed; on success
        // `raw` is a valid event, read before `yaml_event_delete` frees what it owns.
        unsafe {
            let p = self.sys.as_mut_ptr();
            if sys::yaml_parser_parse(p, raw.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let raw = raw.as_mut_ptr();
            let event = convert(&*raw);
            let mark = (*raw).start_mark;
            sys::yaml_event_delete(raw);
            if matches!(event, Event::End) {
                self.done = true;
            }
            Some(Located {
                event,
                line: mark.line.saturating_add(1),
                column: mark.column.saturating_add(1),
            })
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a failed initialize leaves a zeroed parser that
        // delete also accepts: every buffer pointer is null).
        unsafe { sys::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

/// SAFETY: `e` must be a valid event just returned by `yaml_parser_parse`.
unsafe fn convert(e: &sys::yaml_event_t) -> Event {
    // SAFETY (each arm): the union field read is the one the event type names.
    match e.type_ {
        sys::YAML_SEQUENCE_START_EVENT => Event::Open {
            anchor: unsafe { anchor(e.data.sequence_start.anchor) },
        },
        sys::YAML_MAPPING_START_EVENT => Event::Open {
            anchor: unsafe { anchor(e.data.mapping_start.anchor) },
        },
        sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::Close,
        sys::YAML_SCALAR_EVENT => Event::Scalar {
            anchor: unsafe { anchor(e.data.scalar.anchor) },
        },
        sys::YAML_ALIAS_EVENT => Event::Alias {
            anchor: unsafe { anchor(e.data.alias.anchor) }.unwrap_or_default(),
        },
        sys::YAML_STREAM_END_EVENT => Event::End,
        _ => Event::Other,
    }
}

/// SAFETY: `p` is null or a NUL-terminated string owned by a live event.
unsafe fn anchor(p: *mut u8) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    Some(unsafe { CStr::from_ptr(p.cast()) }.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(depth: usize) -> String {
        format!("models: {}{}\n", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_is_refused() {
        // `models:` is the outer mapping: one level.
        assert_eq!(check(&flow(MAX_DEPTH - 1)), Ok(()));
        assert_eq!(
            check(&flow(MAX_DEPTH)),
            Err(BoundsError::TooDeep {
                line: 1,
                column: 9 + MAX_DEPTH as u64 - 1
            })
        );
    }

    #[test]
    fn block_and_flow_mappings_count_too() {
        let block: String = (0..80).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert!(matches!(check(&block), Err(BoundsError::TooDeep { .. })));
        let compact = format!("models:\n{}x\n", "- ".repeat(80));
        assert!(matches!(check(&compact), Err(BoundsError::TooDeep { .. })));
        let map = format!("m: {}1{}\n", "{a: ".repeat(80), "}".repeat(80));
        assert!(matches!(check(&map), Err(BoundsError::TooDeep { .. })));
    }

    #[test]
    fn an_alias_bomb_is_refused_and_plain_aliases_pass() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(matches!(
            check(&bomb),
            Err(BoundsError::TooManyNodes { .. })
        ));
        assert_eq!(check("a: &u http://x\nb: *u\nc: [*u, *u]\n"), Ok(()));
    }

    #[test]
    fn syntax_errors_are_left_to_the_deserializer() {
        assert_eq!(check("a: [1, 2\n"), Ok(()));
        assert_eq!(check(""), Ok(()));
    }
}
