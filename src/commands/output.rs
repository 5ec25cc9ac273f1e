//! How commands print: with `--json` exactly one JSON document on stdout (carrying
//! `schema_version`) and nothing else there; human text otherwise. Notes, progress and
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

/// The JSON document for a failed command (`schema_version` is added when printed).
pub(crate) fn error_doc(code: Code, message: &str) -> Value {
    json!({"ok": false, "exit_code": code as u8, "error": message})
}

/// Prints what clap has to say instead of running a command: help and version on stdout
/// (exit 0), usage errors on stderr (exit 2). With `--json`, `--version` prints
/// `{"schema_version":1,"version":...}` and a usage error also prints [`error_doc`] on
/// stdout; help stays text.
pub(crate) fn clap_outcome(e: &clap::Error, json: bool) -> Code {
    use clap::error::ErrorKind;
    let out = Output::new(json);
    let code = if e.exit_code() == 0 {
        Code::Ok
    } else {
        Code::Usage
    };
    if json && e.kind() == ErrorKind::DisplayVersion {
        out.result(json!({"version": env!("CARGO_PKG_VERSION")}), "");
        return code;
    }
    let rendered = e.render();
    if !e.use_stderr() {
        let text = styled(&rendered, io::stdout().is_terminal());
        write_stdout(text.as_bytes());
        return code;
    }
    write_stderr(&styled(&rendered, out.color));
    if json {
        out.result(error_doc(code, &clap_message(e, &rendered.to_string())), "");
    }
    code
}

/// clap's text with colours when they are wanted on that stream.
fn styled(text: &clap::builder::StyledStr, tty: bool) -> String {
    if tty && std::env::var_os("NO_COLOR").is_none() {
        text.ansi().to_string()
    } else {
        text.to_string()
    }
}

/// The one-line reason of a clap error, for the JSON document.
fn clap_message(e: &clap::Error, plain: &str) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a subcommand or argument is missing; see --help".to_string();
    }
    let first = plain.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
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

    /// Prints the command's result: `doc` with `--json`, else `human` on stdout.
    pub(crate) fn result(&self, mut doc: Value, human: &str) {
        if !self.results {
            return;
        }
        if self.json {
            if let Value::Object(map) = &mut doc {
                map.insert("schema_version".into(), json!(SCHEMA_VERSION));
            }
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
        if self.json {
            self.result(error_doc(e.code, &e.message), "");
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
