//! The committed completions and man pages must match the CLI definition.
//! Regenerate with: CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh

use std::path::Path;

#[test]
fn completions_and_man_pages_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("CLAWDBOT_BLESS").is_some();
    let mut stale = Vec::new();
    let mut generated = clawdbot::docs::completions_and_units();
    let mut root_cmd = clawdbot::cli::command();
    root_cmd.build();
    man_pages(&root_cmd, "clawdbot", &mut generated);
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

/// One man page per command and subcommand, named `clawdbot-daemon-start.1` and so on.
fn man_pages(cmd: &clap::Command, page_name: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let renamed = cmd.clone().name(page_name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(renamed)
        .render(&mut buf)
        .expect("rendering a man page into memory cannot fail");
    out.push((format!("man/{page_name}.1"), buf));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{page_name}-{}", sub.get_name()), out);
    }
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
