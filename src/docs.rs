//! Completion scripts and man pages, generated from the clap definition, and the
//! example systemd units (rendered like `daemon install` renders them).
//!
//! The generated files are committed under `completions/` and `man/`; the test
//! `tests/operator/docs_fresh.rs` fails when they differ from what the current definition renders
//! (run it with `CLAWDBOT_BLESS=1` to rewrite them).

use clap_complete::Shell as ClapShell;

use crate::cli::{command, Shell};

/// Renders the completion script for one shell.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = command();
    let mut out = Vec::new();
    let shell = match shell {
        Shell::Bash => ClapShell::Bash,
        Shell::Zsh => ClapShell::Zsh,
        Shell::Fish => ClapShell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "clawdbot", &mut out);
    out
}

/// Every generated file: (path relative to the repository root, contents).
pub fn render_all() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "completions/clawdbot.bash".to_string(),
            completion(Shell::Bash),
        ),
        ("completions/_clawdbot".to_string(), completion(Shell::Zsh)),
        (
            "completions/clawdbot.fish".to_string(),
            completion(Shell::Fish),
        ),
    ];
    let mut root = command();
    root.build();
    man_pages(&root, "clawdbot", &mut files);
    files.extend(crate::daemon::unit::example_units());
    files
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
