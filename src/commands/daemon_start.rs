//! `daemon start`, `daemon run` and `daemon restart`.
//!
//! Start protocol (one daemon per name, whatever the number of concurrent starts):
//! 1. take the name's start lock (blocking, bounded by the start timeout);
//! 2. probe: a daemon that answers means "already running" (exit 0);
//! 3. otherwise clear leftovers of a dead daemon, fork the detached daemon and wait for
//!    its readiness report, then confirm with a socket round trip;
//! 4. release the start lock.

use std::fs::File;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::json;

use super::output::Output;
use crate::cli::{LaunchArgs, RestartArgs, RunArgs, StartArgs};
use crate::daemon::detach::{spawn_detached, StartReport};
use crate::daemon::pidfile::{open_lock_file, try_lock_exclusive, TryLock};
use crate::daemon::probe::{remove_leftovers, PROBE_TIMEOUT};
use crate::daemon::runtime::{self, ReadyPipe};
use crate::daemon::{probe, Launch, Probe};
use crate::exit::{CliError, CmdResult, Code};
use crate::ipc::client::Client;
use crate::paths::{io_error, DaemonPaths, Layout};

pub fn start(layout: &Layout, args: &StartArgs, out: &Output) -> CmdResult {
    start_daemon(layout, &args.launch, Duration::from_secs(args.timeout), out)
}

pub fn restart(layout: &Layout, args: &RestartArgs, out: &Output) -> CmdResult {
    let timeout = Duration::from_secs(args.timeout);
    super::daemon_stop::stop_daemon(
        layout,
        &args.launch.name,
        timeout,
        &Output::new(false),
        true,
    )?;
    start_daemon(layout, &args.launch, timeout, out)
}

/// `daemon run`: the same daemon in the foreground.
pub fn run_foreground(layout: &Layout, args: &RunArgs) -> CmdResult {
    let paths = layout.daemon(&args.launch.name)?;
    let launch = Launch::resolve(&paths, &args.launch)?;
    if args.ready_fd.is_none() {
        launch.save(&paths)?;
    }
    runtime::run(&paths, &launch, ReadyPipe::from_fd(args.ready_fd))
}

/// Starts a detached daemon (or finds it running) and prints the outcome.
pub fn start_daemon(
    layout: &Layout,
    args: &LaunchArgs,
    timeout: Duration,
    out: &Output,
) -> CmdResult {
    let paths = layout.daemon(&args.name)?;
    let launch = Launch::resolve(&paths, args)?;
    if launch.exec.is_none() {
        if let Some(cfg) = &launch.config {
            crate::config::load(cfg)?;
        }
    }
    paths.ensure_run_dir()?;
    let lock = StartLock::acquire(&paths.start_lock, timeout)?;

    match probe(&paths) {
        Probe::Running { pid, version } => {
            out.note(&format!(
                "daemon {:?} is already running (pid {pid})",
                paths.name
            ));
            out.result(
                json!({"ok": true, "name": paths.name, "state": "running", "pid": pid,
                       "version": version, "already_running": true}),
                &format!("{} already running (pid {pid})", paths.name),
            );
            return Ok(Code::Ok);
        }
        Probe::Unresponsive { pid, reason } => {
            return Err(CliError::new(
                Code::Unknown,
                format!(
                    "daemon {:?} holds its pid lock (pid {}) but does not answer ({reason}); \
                     run `clawdbot daemon stop --name {}` first",
                    paths.name,
                    pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    paths.name
                ),
            ))
        }
        Probe::Denied { reason } => return Err(CliError::new(Code::Unknown, reason)),
        Probe::Stale { .. } | Probe::NotRunning => remove_leftovers(&paths),
    }

    launch.save(&paths)?;
    crate::paths::ensure_parent(&launch.log)?;
    let started = Instant::now();
    let (report, lock) = spawn_detached(lock, timeout, |ready_fd| {
        match runtime::run(&paths, &launch, ReadyPipe::from_fd(Some(ready_fd))) {
            Ok(code) => code,
            Err(e) => e.code,
        }
    })?;
    let spinner = out.spinner(&format!("starting {}", paths.name));
    let result = confirm(&paths, &launch, report, started, timeout, out);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    drop(lock);
    result
}

fn confirm(
    paths: &DaemonPaths,
    launch: &Launch,
    report: StartReport,
    started: Instant,
    timeout: Duration,
    out: &Output,
) -> CmdResult {
    let failure = |what: String| {
        let tail = last_lines(&launch.log, 20);
        let mut msg = format!("daemon {:?} did not start: {what}", paths.name);
        if !tail.is_empty() {
            msg.push_str(&format!(
                "\nlast lines of {}:\n{}",
                launch.log.display(),
                tail.join("\n")
            ));
        }
        CliError::failure(msg)
    };
    match report {
        StartReport::Ready { pid } => {
            let left = timeout.saturating_sub(started.elapsed()).max(PROBE_TIMEOUT);
            let client = Client::connect(&paths.socket, left).map_err(|e| {
                failure(format!(
                    "it reported ready but its socket did not answer: {e}"
                ))
            })?;
            let ms = started.elapsed().as_millis() as u64;
            out.result(
                json!({"ok": true, "name": paths.name, "state": "running", "pid": client.daemon_pid,
                       "version": client.daemon_version, "log": launch.log.display().to_string(),
                       "socket": paths.socket.display().to_string(), "ready_ms": ms}),
                &format!(
                    "started {} (pid {pid}) in {ms} ms; log: {}",
                    paths.name,
                    launch.log.display()
                ),
            );
            Ok(Code::Ok)
        }
        StartReport::Failed(msg) => Err(failure(msg)),
        StartReport::Died => Err(failure("it exited during startup".into())),
        StartReport::TimedOut => Err(failure(format!(
            "no readiness within {} s",
            timeout.as_secs()
        ))),
    }
}

/// The last `n` lines of a log file (empty when unreadable).
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The per-name start lock: serialises concurrent `daemon start`s.
struct StartLock(#[allow(dead_code)] File);

impl StartLock {
    fn acquire(path: &Path, timeout: Duration) -> Result<StartLock, CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            let file = open_lock_file(path).map_err(|e| io_error("open start lock", path, e))?;
            match try_lock_exclusive(file).map_err(|e| io_error("lock", path, e))? {
                TryLock::Acquired(f) => return Ok(StartLock(f)),
                TryLock::HeldByOther if Instant::now() < deadline => {
                    sleep(Duration::from_millis(25))
                }
                TryLock::HeldByOther => {
                    return Err(CliError::new(
                        Code::Unknown,
                        format!(
                            "another start of this daemon is still running (lock {})",
                            path.display()
                        ),
                    ))
                }
            }
        }
    }
}
