//! Completion scripts, generated from the clap definition, and the example systemd
//! units (rendered like `daemon install` renders them).
//!
//! The generated files are committed under `completions/` and `man/`; the test
//! `tests/operator/docs_fresh.rs` fails when they differ from what the current definition renders
//! (run it with `CLAWDBOT_BLESS=1` to rewrite them).

use crate::cli::Shell;

/// The completion script for one shell: clap_complete's dynamic registration, which asks
/// `clawdbot` (on PATH) for the candidates as the user types (see [`crate::cli::complete`]).
pub(crate) fn completion(shell: Shell) -> Vec<u8> {
    crate::cli::complete::registration(shell)
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
