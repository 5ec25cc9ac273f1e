//! The README's benchmark commands, checked against [`Params`] when this binary runs
//! without `--bench` (as `cargo test --all-targets` runs it): a renamed or removed flag
//! fails the test run instead of leaving a README command that no longer works.

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::Params;

/// How a README benchmark command starts (`cargo test` runs the debug-build smoke).
const PREFIXES: [&str; 2] = [
    "cargo bench --bench pipeline",
    "cargo test --bench pipeline",
];

/// Parses the arguments of every `cargo bench --bench pipeline -- ARGS` (or `cargo test`)
/// line of the README (the part before a `#` comment) with the benchmark's own parser.
pub fn check_bench_commands() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let command = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = PREFIXES.iter().find_map(|p| command.strip_prefix(p)) else {
            continue;
        };
        let args = rest.trim().strip_prefix("--").unwrap_or_default();
        let argv = std::iter::once("pipeline").chain(args.split_whitespace());
        // `--help` is a command that works, though clap reports it as an error.
        let parsed = Params::try_parse_from(argv).map(|_| ());
        if let Err(e) = parsed.or_else(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp => Ok(()),
            _ => Err(e),
        }) {
            bail!("README.md:{}: `{command}` does not parse:\n{e}", n + 1);
        }
        checked += 1;
    }
    if checked == 0 {
        bail!("README.md shows no `{}` command", PREFIXES[0]);
    }
    eprintln!("README: {checked} benchmark commands parse");
    Ok(())
}
