//! `daemon logs [--name NAME] [--follow] [--lines N] [--since WHEN]`: prints the log,
//! following rotation; without `--name`, every daemon's log merged by time. The lines are
//! printed raw, also with `--json` (they are the log's own lines, JSON when
//! `logging.format: json`). A reader that goes away ends the command quietly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use crate::cli::LogsArgs;
use crate::daemon::Launch;
use crate::exit::{CliError, CmdResult, Code};
use crate::logging::{Collector, LogTarget};
use crate::paths::{io_error, Layout};

use super::log_tail::recent_lines;
use super::output::write_stdout;

pub(crate) fn logs(layout: &Layout, args: &LogsArgs) -> CmdResult {
    match &args.name {
        Some(name) => one_log(layout, name, args),
        None => every_log(layout, args),
    }
}

/// `daemon logs --name NAME`: its last lines, then (with `--follow`) what is appended.
fn one_log(layout: &Layout, name: &str, args: &LogsArgs) -> CmdResult {
    let paths = layout.daemon(name)?;
    let launch = Launch::load(&paths);
    let model_service = launch.as_ref().is_some_and(|l| l.exec.is_some());
    let path = match Launch::log_target(&paths) {
        LogTarget::File(path) => path,
        LogTarget::Stderr => return Err(CliError::failure(where_stderr_goes(name, model_service))),
    };
    if !path.exists() {
        let known = layout.daemon_names()?.iter().any(|n| n == name);
        if !known && !paths.default_config.is_file() {
            // Nothing will ever write this log: waiting (--follow) would print nothing
            // for ever, so an unknown name is an error with or without --follow.
            return Err(CliError::failure(format!(
                "no daemon named {name:?} here and no log file at {} (daemons here: {})",
                path.display(),
                names_or_none(&layout.daemon_names()?),
            )));
        }
        if !args.follow {
            return Err(CliError::failure(format!(
                "no log file at {} (has {name} ever started?)",
                path.display(),
            )));
        }
        eprintln!(
            "waiting for {name}'s log at {} (it appears when {name} starts)",
            path.display()
        );
    }
    // An unreadable log is an error (exit 1) before anything is printed or followed:
    // `--follow` would otherwise wait for ever on a file it can never read.
    let lines = recent_lines(&path, args.lines, args.since)?;
    let tail: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    if write_stdout(tail.as_bytes()) && args.follow {
        follow(&path)?;
    }
    Ok(Code::Ok)
}

/// `daemon logs` without `--name`: the last lines of every listed daemon's log file,
/// merged by time, each prefixed `NAME | `. A daemon logging to stderr, or whose log
/// cannot be read, is named on stderr and makes the exit 1; the others still print.
fn every_log(layout: &Layout, args: &LogsArgs) -> CmdResult {
    let names = layout.daemon_names()?;
    if args.follow {
        return Err(CliError::usage(format!(
            "--follow follows one daemon: add --name NAME (daemons here: {})",
            names_or_none(&names)
        )));
    }
    let mut merged = Vec::new();
    let mut problems = Vec::new();
    for name in &names {
        let paths = layout.daemon(name)?;
        match Launch::log_target(&paths) {
            LogTarget::Stderr => problems.push(format!(
                "{name}: logs to stderr, not to a file (see: daemon logs --name {name})"
            )),
            LogTarget::File(path) => match recent_lines(&path, args.lines, args.since) {
                Ok(lines) => merged.extend(lines.into_iter().map(|(t, l)| (t, name, l))),
                Err(e) => problems.push(format!("{name}: {}", e.message)),
            },
        }
    }
    // Stable: lines of one daemon keep their order; lines without any time go first.
    merged.sort_by_key(|(t, _, _)| *t);
    let skip = merged.len().saturating_sub(args.lines);
    let text: String = merged
        .into_iter()
        .skip(skip)
        .map(|(_, name, line)| format!("{name} | {line}\n"))
        .collect();
    write_stdout(text.as_bytes());
    if names.is_empty() {
        return Err(CliError::new(Code::NotRunning, "no daemons here"));
    }
    match problems.is_empty() {
        true => Ok(Code::Ok),
        false => Err(CliError::failure(problems.join("\n"))),
    }
}

/// The known daemons for a message: `a, b` or `none`.
fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The explanation `logs` gives (exit 1) for a daemon whose last launch logged to stderr:
/// the lines are with whatever collected that stderr. The collector seen from here is
/// named first. `model_service`: the last launch ran a model service (unit `clawdbot-gateway@NAME`).
fn where_stderr_goes(name: &str, model_service: bool) -> String {
    let unit = crate::daemon::unit::unit_instance(model_service, name);
    let journal = format!(
        "under systemd: journalctl -u {unit} (or the unit's name) -f; for a user \
         service: journalctl --user -u {unit} -f"
    );
    let container =
        "in a container: docker logs -f CONTAINER, podman logs -f CONTAINER or docker compose \
         logs -f bot (from the host)";
    let (first, second) = match crate::logging::detect_collector() {
        Some(Collector::Container) => (container.to_string(), journal),
        _ => (journal, container.to_string()),
    };
    format!(
        "daemon {name:?} logs to stderr (`--log -`, logging.target: stderr, or `daemon run` \
         under systemd or in a container), not to a file, so there is nothing to print here. \
         Its log is where its stderr went:\n  {first}\n  {second}\n  run by hand: the \
         terminal that ran `clawdbot daemon run`.\nTo log to a file instead, pass --log FILE \
         or set logging.target: file."
    )
}

/// Prints what is appended to `path`, reopening it when it is rotated or truncated.
/// Returns when stdout is gone.
fn follow(path: &Path) -> Result<(), CliError> {
    let mut current = open_log(path, true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some((file, ino)) = current.as_mut() {
            loop {
                let n = file.read(&mut buf).map_err(|e| io_error("read", path, e))?;
                if n == 0 {
                    break;
                }
                if !write_stdout(&buf[..n]) {
                    return Ok(());
                }
            }
            let rotated = std::fs::metadata(path)
                .map(|m| m.ino() != *ino)
                .unwrap_or(false);
            if rotated {
                current = open_log(path, false);
            }
        } else {
            current = open_log(path, false);
        }
        sleep(Duration::from_millis(200));
    }
}

/// Opens the log (at its end when `at_end`) with its inode; `None` when it is missing or
/// not a regular file (a FIFO would block the open).
fn open_log(path: &Path, at_end: bool) -> Option<(File, u64)> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut file = File::open(path).ok()?;
    if at_end {
        file.seek(SeekFrom::End(0)).ok()?;
    }
    let ino = file.metadata().ok()?.ino();
    Some((file, ino))
}
