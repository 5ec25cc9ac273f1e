//! How commands print: with `--json` exactly one JSON document on stdout, in the one
//! envelope of README "JSON output" (`ok`, `exit_code`, `schema_version`, and `error`
//! {kind, message, fix} exactly when not ok; schemas in `docs/json/`), and nothing else
//! there; human text otherwise. Notes, progress and
//! errors always go to stderr. Colour only on a terminal and never with `NO_COLOR`.
//!
//! Invariant: printing never panics. Every byte for stdout goes through [`write_stdout`],
//! which records the first failure: a closed pipe (EPIPE) ends the output quietly and the
//! command keeps its own exit code; any other failure (a full disk) is reported once on
//! stderr by [`settle`] and the exit code becomes 1. A failing stderr is ignored: there
//! is nowhere left to say so.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::exit::{CliError, Code};
use crate::status::SCHEMA_VERSION;

/// The first stdout write failure of this process, if any.
static STDOUT_FAILURE: OnceLock<StdoutFailure> = OnceLock::new();

#[derive(Debug)]
enum StdoutFailure {
    /// The reader went away (EPIPE): stop printing, quietly.
    BrokenPipe,
    /// Anything else (ENOSPC, EIO...), with the OS message.
    Other(String),
}

/// Writes `bytes` to stdout and flushes them. False when stdout failed, now or earlier
/// (nothing more is attempted then).
pub(crate) fn write_stdout(bytes: &[u8]) -> bool {
    if STDOUT_FAILURE.get().is_some() {
        return false;
    }
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(e) => {
            let failure = match e.kind() {
                io::ErrorKind::BrokenPipe => StdoutFailure::BrokenPipe,
                _ => StdoutFailure::Other(e.to_string()),
            };
            let _ = STDOUT_FAILURE.set(failure);
            false
        }
    }
}

/// Writes `text` to stderr, ignoring failures.
pub(crate) fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// The process exit code once the command returned `code`: unchanged unless stdout
/// failed with something other than a closed pipe, which is said on stderr and exits 1.
pub(crate) fn settle(code: Code) -> Code {
    match STDOUT_FAILURE.get() {
        Some(StdoutFailure::Other(e)) => {
            write_stderr(&format!("error: cannot write to stdout: {e}\n"));
            Code::Failure
        }
        Some(StdoutFailure::BrokenPipe) | None => code,
    }
}

/// The envelope every `--json` document carries (README "JSON output"): `ok` (exit code
/// 0), `exit_code`, `schema_version`, and `error` {kind, message, fix} exactly when `ok` is
/// false. `fields` are the command's own top-level fields (an object).
fn envelope(fields: Value, code: Code, failure: Option<&CliError>) -> Value {
    debug_assert!(
        fields.is_object(),
        "a --json document is an object: {fields}"
    );
    debug_assert_eq!(
        failure.is_some(),
        code != Code::Ok,
        "error exactly when not ok"
    );
    let mut map = match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("ok".into(), json!(code == Code::Ok));
    map.insert("exit_code".into(), json!(code as u8));
    map.insert("schema_version".into(), json!(SCHEMA_VERSION));
    if let Some(e) = failure {
        map.insert(
            "error".into(),
            json!({"kind": e.kind, "message": e.message, "fix": e.fix}),
        );
    }
    Value::Object(map)
}

/// Prints what clap has to say instead of running a command: help and version on stdout
/// (exit 0), usage errors on stderr (exit 2). With `--json`, `--version` prints the
/// envelope with `version`, and a usage error also prints the failure document (kind
/// `usage`) on stdout; help stays text.
pub(crate) fn clap_outcome(e: &clap::Error, json: bool) -> Code {
    use clap::error::ErrorKind;
    let out = Output::new(json);
    if json && e.kind() == ErrorKind::DisplayVersion {
        out.result(json!({"version": env!("CARGO_PKG_VERSION")}), "");
        return Code::Ok;
    }
    let rendered = e.render();
    if !e.use_stderr() {
        let text = styled(&rendered, io::stdout().is_terminal());
        write_stdout(text.as_bytes());
        return Code::Ok;
    }
    write_stderr(&styled(&rendered, out.color));
    let failure = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        missing_subcommand(&rendered.to_string())
    } else {
        clap_failure(&rendered.to_string())
    };
    if json {
        out.print(json!({}), "", Some(&failure));
    }
    failure.code
}

/// A clap usage error as a [`CliError`] (kind `usage`), read from clap's rendered text
/// (hand-written: clap's error context has no one-line message, and the rendered words
/// are the ones the user sees on stderr; unit tests below pin the format). The message is clap's first
/// paragraph on one line, so a missing argument keeps its name ("the following required
/// arguments were not provided: --name <NAME>"); the fix is clap's "similar argument"
/// tip when it has one, else its usage line.
fn clap_failure(plain: &str) -> CliError {
    let mut lines = plain.lines().map(str::trim);
    let message = lines
        .by_ref()
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let rest: Vec<&str> = lines.collect();
    let tip = rest
        .iter()
        .find_map(|l| l.strip_prefix("tip: ").filter(|t| t.contains("similar")));
    let usage = rest.iter().find(|l| l.starts_with("Usage: "));
    let fix = tip.or(usage.copied()).map(str::to_string);
    CliError::usage(if message.is_empty() {
        "bad command line; see --help"
    } else {
        message
    })
    .fix_if(fix)
}

/// A command given without its subcommand (clap prints that command's help): the
/// subcommands it takes, from the help's `Commands:` list, and its usage line as the fix.
fn missing_subcommand(help: &str) -> CliError {
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    let usage = help.lines().find(|l| l.starts_with("Usage: "));
    CliError::usage(format!(
        "a subcommand is missing: one of {}",
        commands.join(", ")
    ))
    .fix_if(usage)
}

/// clap's text with colours when they are wanted on that stream.
fn styled(text: &clap::builder::StyledStr, tty: bool) -> String {
    if tty && std::env::var_os("NO_COLOR").is_none() {
        text.ansi().to_string()
    } else {
        text.to_string()
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
    color: bool,
    tty: bool,
    /// Spinners run a thread: off where the caller forks again afterwards (quickstart).
    spinners: bool,
    /// False for nested commands whose result the caller reports itself.
    results: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Output {
        let tty = std::io::stderr().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none();
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color);
        Output {
            json,
            color,
            tty,
            spinners: true,
            results: true,
        }
    }

    /// The same output without spinners (for callers that fork more than once).
    pub(crate) fn without_spinners(&self) -> Output {
        Output {
            spinners: false,
            ..*self
        }
    }

    /// Prints no results and no spinners, only notes and errors (nested commands).
    pub(crate) fn silent(&self) -> Output {
        Output {
            json: false,
            spinners: false,
            results: false,
            ..*self
        }
    }

    /// Prints a successful command's result (exit 0): its fields in the envelope with
    /// `--json`, else `human` on stdout.
    pub(crate) fn result(&self, fields: Value, human: &str) {
        self.print(fields, human, None);
    }

    /// Prints a result that ends the command with `failure`'s exit code (a daemon not
    /// running, a failed check): the fields with the failure in the envelope with `--json`,
    /// else `human` on stdout. Returns that exit code.
    pub(crate) fn failed_result(&self, fields: Value, human: &str, failure: &CliError) -> Code {
        self.print(fields, human, Some(failure));
        failure.code
    }

    /// Prints `fields` in the envelope (`--json`) or `human`; exit 0 unless `failure`.
    fn print(&self, fields: Value, human: &str, failure: Option<&CliError>) {
        if !self.results {
            return;
        }
        if self.json {
            let code = failure.map_or(Code::Ok, |e| e.code);
            let doc = envelope(fields, code, failure);
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            write_stdout(format!("{text}\n").as_bytes());
        } else if !human.is_empty() {
            write_stdout(format!("{}\n", human.trim_end()).as_bytes());
        }
    }

    /// A side note on stderr (never part of the JSON document).
    pub(crate) fn note(&self, text: &str) {
        write_stderr(&format!("{text}\n"));
    }

    /// Prints an error: on stderr, and with `--json` also as a JSON document on stdout.
    pub(crate) fn error(&self, e: &CliError) {
        let prefix = if self.color {
            console::style("error:").red().bold().to_string()
        } else {
            "error:".into()
        };
        write_stderr(&format!("{prefix} {}\n", e.message));
        if let Some(fix) = e.fix.as_ref().filter(|f| !e.message.contains(f.as_str())) {
            write_stderr(&format!("fix: {fix}\n"));
        }
        if self.json {
            self.print(json!({}), "", Some(e));
        }
    }

    /// A spinner on stderr when it is a terminal and no JSON is asked for; `None` otherwise.
    /// Only call after any fork (the spinner runs a thread).
    pub(crate) fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        if !self.tty || self.json || !self.spinners {
            return None;
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }

    /// `ok  `, `warn` or `FAIL`, coloured on a terminal (one width, for aligned lines).
    pub(crate) fn check_tag(&self, status: crate::ipc::proto::CheckStatus) -> String {
        use crate::ipc::proto::CheckStatus;
        match status {
            CheckStatus::Ok => self.style_ok("ok  "),
            CheckStatus::Warn => self.style_warn("warn"),
            CheckStatus::Fail => self.style_bad("FAIL"),
        }
    }

    /// A check starting or ending, as one line on stderr (also with `--json`: progress
    /// is never part of the document), so slow checks never leave the terminal blank.
    pub(crate) fn check_progress(&self, event: crate::bot::CheckProgress<'_>) {
        match event {
            crate::bot::CheckProgress::Started { name, what } => {
                self.note(&format!("....  {name}: {what}"))
            }
            crate::bot::CheckProgress::Finished(check) => {
                self.note(&format!("{}  {}", self.check_tag(check.status), check.name))
            }
        }
    }

    pub(crate) fn style_ok(&self, s: &str) -> String {
        if self.color {
            console::style(s).green().to_string()
        } else {
            s.to_string()
        }
    }

    pub(crate) fn style_bad(&self, s: &str) -> String {
        if self.color {
            console::style(s).red().to_string()
        } else {
            s.to_string()
        }
    }

    pub(crate) fn style_warn(&self, s: &str) -> String {
        if self.color {
            console::style(s).yellow().to_string()
        } else {
            s.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn clap_error(args: &[&str]) -> clap::Error {
        crate::cli::Cli::try_parse_from(args).expect_err("a usage error")
    }

    #[test]
    fn a_missing_argument_keeps_its_name_and_the_usage_line_is_the_fix() {
        let e = clap_error(&["clawdbot", "send", "--to", "x", "--text", "y"]);
        let failure = clap_failure(&e.render().to_string());
        assert_eq!(
            failure.message,
            "the following required arguments were not provided: --name <NAME>"
        );
        assert_eq!(
            (failure.code, failure.kind),
            (Code::Usage, crate::exit::ErrorKind::Usage)
        );
        assert!(failure.fix.unwrap().starts_with("Usage: clawdbot send"));
    }

    #[test]
    fn a_missing_subcommand_names_the_ones_it_takes() {
        let e = clap_error(&["clawdbot", "daemon"]);
        let failure = missing_subcommand(&e.render().to_string());
        assert!(
            failure
                .message
                .starts_with("a subcommand is missing: one of start, run, stop"),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("help"), "{}", failure.message);
        assert_eq!(
            failure.fix.as_deref(),
            Some("Usage: clawdbot daemon [OPTIONS] <COMMAND>")
        );
    }
}
