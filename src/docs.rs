//! Completion scripts, generated from the clap definition, and the example systemd
//! units (rendered like `daemon install` renders them).
//!
//! The generated files are committed under `completions/` and `man/`; the test
//! `tests/operator/docs_fresh.rs` fails when they differ from what the current definition renders
//! (run it with `CLAWDBOT_BLESS=1` to rewrite them).

use clap_complete::Shell as ClapShell;

use crate::cli::{command, Shell};

/// Renders the completion script for one shell.
pub(crate) fn completion(shell: Shell) -> Vec<u8> {
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

/// The generated files rendered here: (path relative to the repository root, contents).
///
/// Man pages are rendered by `tests/operator/docs_fresh.rs` itself (`clap_mangen` is a
/// dev-dependency: the binary never renders one), from the same [`command`].
pub fn completions_and_units() -> Vec<(String, Vec<u8>)> {
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
    files.extend(crate::daemon::unit::example_units());
    files
}
