//! The committed completions, man pages and the README's module graph must match the code.
//! Regenerate with: CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh

use std::path::Path;

use super::module_graph;

#[test]
fn completions_and_man_pages_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("CLAWDBOT_BLESS").is_some();
    let mut stale = Vec::new();
    let mut generated = clawdbot::docs::completions_and_units();
    generated.extend(super::man_pages::pages(root));
    for (rel, body) in generated {
        let path = root.join(&rel);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &body).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&body[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh"
    );
}

#[test]
fn completions_command_prints_the_committed_script() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdbot"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/clawdbot.bash"))
            .unwrap();
    assert_eq!(out.stdout, committed);
}

/// The `clawdbot` command lines of the README's `sh` blocks (continuations joined, `sudo`
/// and `cargo run --` dropped), split into one argument list per command: a word with
/// alternatives (`status|stop`) gives one list per alternative, `[--flag]` is taken as
/// `--flag`, and a lone `...` (the rest as before) is dropped.
fn readme_commands(readme: &str) -> Vec<(usize, Vec<String>)> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if pending.is_empty() {
            first_line = i + 1;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let words = shlex::split(&pending)
            .unwrap_or_else(|| panic!("README.md:{first_line}: unbalanced quotes: {pending}"));
        pending.clear();
        for segment in words.split(|w| ["|", "&&", "&", ";"].contains(&w.as_str())) {
            let mut words: Vec<&str> = segment.iter().map(String::as_str).collect();
            // A redirection (`> FILE`, `>/dev/null`) is the shell's, not an argument.
            if let Some(at) = words.iter().position(|w| w.starts_with('>')) {
                words.truncate(at);
            }
            if words.first() == Some(&"sudo") {
                words.remove(0);
            }
            let args = match words.as_slice() {
                ["clawdbot", rest @ ..] => rest,
                ["cargo", "run", "--", rest @ ..] => rest,
                _ => continue,
            };
            let mut variants: Vec<Vec<String>> = vec![vec!["clawdbot".into()]];
            for word in args.iter().filter(|w| **w != "...") {
                let word = word.trim_start_matches('[').trim_end_matches(']');
                let options: Vec<&str> = if word.starts_with('-') || !word.contains('|') {
                    vec![word]
                } else {
                    word.split('|').collect()
                };
                variants = variants
                    .into_iter()
                    .flat_map(|v| {
                        options.iter().map(move |o| {
                            let mut v = v.clone();
                            v.push(o.to_string());
                            v
                        })
                    })
                    .collect();
            }
            commands.extend(variants.into_iter().map(|v| (first_line, v)));
        }
    }
    commands
}

/// Every `clawdbot` command the README shows is one the CLI takes as written (no renamed
/// flag, no missing argument); the operator's path itself is run by `tests/smoke.sh`.
#[test]
fn every_readme_command_parses_with_the_cli_definition() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert!(commands.len() >= 30, "too few commands found: {commands:?}");
    let broken: Vec<String> = commands
        .iter()
        .filter_map(|(line, args)| {
            clawdbot::cli::command()
                .try_get_matches_from(args)
                .err()
                .map(|e| format!("README.md:{line}: {}\n{e}", args.join(" ")))
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_readme_parser_sees_alternatives_and_continuations() {
    let text = "```sh\nsudo clawdbot daemon status|stop --name b [--json]   # note\n\
                clawdbot onboard --name b \\\n  --non-interactive ...\nclawdbot completions bash | sudo tee x\n\
                clawdbot completions zsh > ~/.zfunc/_clawdbot   # note\n```\n";
    let got: Vec<String> = readme_commands(text)
        .into_iter()
        .map(|(_, a)| a.join(" "))
        .collect();
    assert_eq!(
        got,
        [
            "clawdbot daemon status --name b --json",
            "clawdbot daemon stop --name b --json",
            "clawdbot onboard --name b --non-interactive",
            "clawdbot completions bash",
            "clawdbot completions zsh",
        ]
    );
}

/// The README's picture of the module graph sits between these lines.
const GRAPH_START: &str =
    "<!-- module graph: generated by tests/operator/docs_fresh.rs, do not edit -->\n```text\n";
const GRAPH_END: &str = "```\n<!-- end of module graph -->";

fn source_graph() -> module_graph::Graph {
    module_graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// No cycle among the top-level modules: each is usable (and testable) with only what
/// it names, and the layers in the README's picture stay layers.
#[test]
fn top_level_modules_form_no_cycle() {
    let cycles = module_graph::cycles(&source_graph());
    assert!(
        cycles.is_empty(),
        "top-level modules use each other in a cycle (module -> (file that uses the next) -> ...):\n{}",
        cycles.join("\n")
    );
}

/// The README's architecture section draws the graph the code has (regenerate with
/// CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh).
#[test]
fn readme_draws_the_module_graph_as_it_is() {
    let graph = source_graph();
    if !module_graph::cycles(&graph).is_empty() {
        return; // top_level_modules_form_no_cycle names the cycle; a picture needs layers.
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(GRAPH_START)
        .expect("README has the module graph start line")
        + GRAPH_START.len();
    let end = start
        + readme[start..]
            .find(GRAPH_END)
            .expect("README has the module graph end line");
    let drawn = module_graph::picture(&graph);
    if std::env::var_os("CLAWDBOT_BLESS").is_some() {
        std::fs::write(
            &path,
            format!("{}{drawn}{}", &readme[..start], &readme[end..]),
        )
        .unwrap();
    } else {
        assert_eq!(
            readme[start..end],
            drawn,
            "README.md's module graph is stale: run CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh"
        );
    }
}

/// The scanner sees uses in `use` groups and paths, and none in comments or strings;
/// the cycle finder names a planted cycle with the files that make it.
#[test]
fn the_graph_reader_sees_code_only_and_names_a_planted_cycle() {
    let code = module_graph::strip_comments_and_strings(
        "use crate::{a::X, b, c::{d, e}};\n// crate::f\n/* crate::g */ let s = \"crate::h\";\n\
         let r = r#\"crate::i\"#; let q = '\"'; fn k<'a>() { crate::j::call(); }\n",
    );
    let found = module_graph::referenced_modules(&code, "crate");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "j"]);

    let mut graph = module_graph::Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), format!("{from}.rs"));
    }
    graph.entry("d".into()).or_default();
    assert_eq!(
        module_graph::cycles(&graph),
        ["a -> (a.rs) b -> (b.rs) c -> (c.rs) a"]
    );
    graph.get_mut("c").unwrap().remove("a");
    assert!(module_graph::cycles(&graph).is_empty());
    assert_eq!(
        module_graph::picture(&graph),
        "a -> b\nb -> c\nc -> d\nd    (uses no other module)\n"
    );
}

/// The files under `src/`, `tests/` and `crates/` plus the README, for
/// [`doc_citations_point_into_the_repo`].
fn cited_from(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut dirs: Vec<_> = ["src", "tests", "crates"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "rs" || e == "sh" || e == "md")
            {
                files.push(path);
            }
        }
    }
    files
}

/// The section numbers cited right after `docs/dingtalk-protocol.md` in `text`
/// (`§7.1–7.3` cites both ends).
fn cited_sections(text: &str) -> Vec<String> {
    let mut sections = Vec::new();
    for (at, _) in text.match_indices("docs/dingtalk-protocol.md") {
        let rest = text[at + "docs/dingtalk-protocol.md".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('§') else {
            continue;
        };
        for part in rest.split_whitespace().next().unwrap_or("").split('–') {
            let number: String = part
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.');
            if !number.is_empty() {
                sections.push(number.to_string());
            }
        }
    }
    sections
}

/// Every `docs/*.md` the code, the tests and the README cite is in the repo, and every
/// section of `docs/dingtalk-protocol.md` they cite is a heading there.
#[test]
fn doc_citations_point_into_the_repo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protocol = std::fs::read_to_string(root.join("docs/dingtalk-protocol.md")).unwrap();
    let headings: Vec<&str> = protocol.lines().filter(|l| l.starts_with('#')).collect();
    let mut broken = Vec::new();
    let mut cited = 0;
    for file in cited_from(root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("docs/") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/_.-".contains(*c))
                .collect();
            if let Some(name) = name.strip_suffix('.').or(Some(&name)) {
                if name.ends_with(".md") && !root.join(name).is_file() {
                    broken.push(format!("{}: {name} is not in the repo", file.display()));
                }
            }
        }
        for section in cited_sections(&text) {
            cited += 1;
            let heading = format!("§{section} ");
            if !headings.iter().any(|h| h.contains(&heading)) {
                broken.push(format!("{}: no section §{section}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(cited > 30, "only {cited} section citations found");
}
