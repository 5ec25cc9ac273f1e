//! How commands print: with `--json` exactly one JSON document on stdout (carrying
//! `schema_version`) and nothing else there; human text otherwise. Notes, progress and
//! errors always go to stderr. Colour only on a terminal and never with `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::exit::CliError;
use crate::status::SCHEMA_VERSION;

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
    color: bool,
    tty: bool,
    /// Spinners run a thread: off where the caller forks again afterwards (quickstart).
    spinners: bool,
    /// False for nested commands whose result the caller reports itself.
    results: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
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
    pub fn without_spinners(&self) -> Output {
        Output {
            spinners: false,
            ..*self
        }
    }

    /// Prints no results and no spinners, only notes and errors (nested commands).
    pub fn silent(&self) -> Output {
        Output {
            json: false,
            spinners: false,
            results: false,
            ..*self
        }
    }

    /// Prints the command's result: `doc` with `--json`, else `human` on stdout.
    pub fn result(&self, mut doc: Value, human: &str) {
        if !self.results {
            return;
        }
        if self.json {
            if let Value::Object(map) = &mut doc {
                map.insert("schema_version".into(), json!(SCHEMA_VERSION));
            }
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else if !human.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", human.trim_end());
        }
    }

    /// A side note on stderr (never part of the JSON document).
    pub fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    /// Prints an error: on stderr, and with `--json` also as a JSON document on stdout.
    pub fn error(&self, e: &CliError) {
        let prefix = if self.color {
            console::style("error:").red().bold().to_string()
        } else {
            "error:".into()
        };
        eprintln!("{prefix} {}", e.message);
        if self.json {
            self.result(
                json!({"ok": false, "exit_code": e.code as u8, "error": e.message}),
                "",
            );
        }
    }

    /// A spinner on stderr when it is a terminal and no JSON is asked for; `None` otherwise.
    /// Only call after any fork (the spinner runs a thread).
    pub fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        if !self.tty || self.json || !self.spinners {
            return None;
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }

    pub fn style_ok(&self, s: &str) -> String {
        if self.color {
            console::style(s).green().to_string()
        } else {
            s.to_string()
        }
    }

    pub fn style_bad(&self, s: &str) -> String {
        if self.color {
            console::style(s).red().to_string()
        } else {
            s.to_string()
        }
    }

    pub fn style_warn(&self, s: &str) -> String {
        if self.color {
            console::style(s).yellow().to_string()
        } else {
            s.to_string()
        }
    }
}
