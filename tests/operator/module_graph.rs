//! The graph of the crate's top-level modules (`src/*.rs`, `src/*/`), read from the source:
//! module A uses module B when a file under A names `crate::B` (also inside a
//! `use crate::{B, ...}` group; `main.rs` names the library as `clawdbot::`). Comments and
//! string literals are skipped, so a doc link or a message does not make an edge.
//!
//! Hand-written rather than `cargo modules` (not installed with the toolchain, and slow):
//! the crate's paths are regular enough that a small scanner reads them exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it uses -> one file that makes the edge.
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Reads the graph of `src` (the crate's source folder).
pub fn read(src: &Path) -> Graph {
    let modules = top_level_modules(src);
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let from = module_of(rel);
        if from == "lib" {
            continue;
        }
        let prefix = if from == "main" { "clawdbot" } else { "crate" };
        let code = strip_comments_and_strings(&std::fs::read_to_string(&file).unwrap());
        for to in referenced_modules(&code, prefix) {
            if to != from && modules.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

/// `foo` for `src/foo.rs` and `src/foo/...`; `main` and `lib` for the crate roots.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| module_of(p.strip_prefix(src).unwrap()))
        .filter(|m| m != "lib")
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The source with comments removed and string/char literals emptied, so only code is
/// searched. Lifetimes (`'a`) are told from char literals (`'a'`, `'\n'`).
pub fn strip_comments_and_strings(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        match (c[i], next) {
            ('/', Some('/')) => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            ('r', Some('#' | '"')) if !ident_char_before(&c, i) || byte_prefix(&c, i) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                while j < c.len()
                    && !(c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')))
                {
                    j += 1;
                }
                i = j + 1 + hashes;
                out.push_str("\"\"");
            }
            ('"', _) => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            ('\'', Some('\\')) => {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            ('\'', Some(_)) if c.get(i + 2) == Some(&'\'') => {
                i += 3;
                out.push_str("' '");
            }
            (ch, _) => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn ident_char_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// `r` of a raw byte string (`br"..."`).
fn byte_prefix(c: &[char], i: usize) -> bool {
    i > 0 && c[i - 1] == 'b' && !ident_char_before(c, i - 1)
}

/// The first path segment after every `PREFIX::` (and every name at the top of a
/// `PREFIX::{...}` group) in `code`.
pub fn referenced_modules(code: &str, prefix: &str) -> BTreeSet<String> {
    let c: Vec<char> = code.chars().collect();
    let pat: Vec<char> = format!("{prefix}::").chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i + pat.len() <= c.len() {
        if c[i..i + pat.len()] != pat[..] || ident_char_before(&c, i) {
            i += 1;
            continue;
        }
        i += pat.len();
        while c.get(i).is_some_and(|ch| ch.is_whitespace()) {
            i += 1;
        }
        if c.get(i) == Some(&'{') {
            i = group_heads(&c, i, &mut found);
        } else {
            found.insert(ident_at(&c, i));
        }
    }
    found.remove("");
    found
}

/// Adds the first name of each item of the `{...}` group opening at `open`; returns the
/// index after its closing brace.
fn group_heads(c: &[char], open: usize, found: &mut BTreeSet<String>) -> usize {
    let mut depth = 0;
    let mut expect_name = true;
    let mut i = open;
    while i < c.len() {
        match c[i] {
            '{' => {
                depth += 1;
                expect_name = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ',' if depth == 1 => expect_name = true,
            ch if ch.is_whitespace() => {}
            _ if expect_name && depth == 1 => {
                found.insert(ident_at(c, i));
                expect_name = false;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn ident_at(c: &[char], start: usize) -> String {
    c[start..]
        .iter()
        .take_while(|ch| ch.is_alphanumeric() || **ch == '_')
        .collect()
}

/// Every cycle's first appearance as `a -> b -> ... -> a`, each edge with a file that
/// makes it; empty when the graph is acyclic.
pub fn cycles(graph: &Graph) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
        found: &mut Vec<String>,
    ) {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|d| d.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::New => visit(graph, next, marks, path, found),
                Mark::OnPath => {
                    let from = path.iter().position(|p| p == next).unwrap();
                    let mut ring: Vec<&String> = path[from..].iter().collect();
                    ring.push(next);
                    let mut text = String::new();
                    for pair in ring.windows(2) {
                        let file = &graph[pair[0].as_str()][pair[1].as_str()];
                        let _ = write!(text, "{} -> ({file}) ", pair[0]);
                    }
                    text.push_str(next);
                    found.push(text);
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(graph, node, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

/// The graph as text, one module a line, each above every module it uses (by depth: the
/// longest chain of uses below it, deepest first, then by name). Only for an acyclic graph.
pub fn picture(graph: &Graph) -> String {
    fn depth(graph: &Graph, m: &str, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(&d) = memo.get(m) {
            return d;
        }
        let d = graph[m]
            .keys()
            .map(|n| 1 + depth(graph, n, memo))
            .max()
            .unwrap_or(0);
        memo.insert(m.to_string(), d);
        d
    }
    let mut memo = BTreeMap::new();
    let mut order: Vec<(usize, &String)> = graph
        .keys()
        .map(|m| (depth(graph, m, &mut memo), m))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let width = graph.keys().map(|m| m.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (_, m) in order {
        let uses: Vec<&str> = graph[m].keys().map(String::as_str).collect();
        let head = format!("{m:<width$} -> ");
        let mut line = head.clone();
        for (k, u) in uses.iter().enumerate() {
            let word = if k + 1 < uses.len() {
                format!("{u}, ")
            } else {
                u.to_string()
            };
            if line.trim_end().len() + word.trim_end().len() > 94 {
                text.push_str(line.trim_end());
                text.push('\n');
                line = " ".repeat(head.len());
            }
            line.push_str(&word);
        }
        if uses.is_empty() {
            line = format!("{m:<width$}    (uses no other module)");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
