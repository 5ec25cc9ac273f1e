//! `daemon stop`: ask over the socket (drain), then SIGTERM, then SIGKILL.
//!
//! A signal is only sent to the pid recorded in the pid file while its lock is held and
//! its start time matches, so a reused pid never gets an innocent process killed.
//! Stopping a daemon that is not running succeeds (exit 0).

use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::output::Output;
use crate::cli::StopArgs;
use crate::daemon::pidfile::{is_locked, is_same_process, read_record, PidRecord};
use crate::daemon::probe::{remove_leftovers, PROBE_TIMEOUT};
use crate::daemon::{probe, Down, Probe};
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::ipc::client::Client;
use crate::ipc::{Request, Response};
use crate::paths::{DaemonPaths, Layout};

pub(crate) fn stop(layout: &Layout, args: &StopArgs, out: &Output) -> CmdResult {
    stop_daemon(
        layout,
        &args.name,
        Duration::from_secs(args.timeout),
        out,
        false,
    )
}

/// How long a process may take to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How the daemon went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    WasNotRunning,
    Drained,
    Terminated,
    Killed,
}

impl Stopped {
    fn as_str(self) -> &'static str {
        match self {
            Stopped::WasNotRunning => "was_not_running",
            Stopped::Drained => "drained",
            Stopped::Terminated => "terminated",
            Stopped::Killed => "killed",
        }
    }
}

/// Stops daemon `name`. `quiet` prints nothing on success (used by restart).
pub(crate) fn stop_daemon(
    layout: &Layout,
    name: &str,
    timeout: Duration,
    out: &Output,
    quiet: bool,
) -> CmdResult {
    let paths = layout.daemon(name)?;
    // Refuses a service user's folder (root, system layout): its pid record is that
    // user's to forge, so nothing named in it is signalled; systemctl stops the service.
    paths.check_state_dir()?;
    let how = match probe(&paths) {
        Probe::Down(Down::NotRunning) => Stopped::WasNotRunning,
        Probe::Down(Down::Stale { .. }) => {
            remove_leftovers(&paths);
            Stopped::WasNotRunning
        }
        Probe::Down(Down::Denied { reason }) => {
            return Err(CliError::new(Code::Unknown, reason).kind(ErrorKind::Permission))
        }
        Probe::Down(Down::UnsafeFolder { reason }) => {
            return Err(CliError::usage(reason).kind(ErrorKind::Permission))
        }
        Probe::Running { .. } => {
            if ask_to_shut_down(&paths, timeout)
                && wait_unlocked(&paths, timeout + Duration::from_secs(1))
            {
                Stopped::Drained
            } else {
                signal_escalation(&paths, timeout)?
            }
        }
        Probe::Down(Down::Unresponsive { .. }) => signal_escalation(&paths, timeout)?,
    };
    remove_leftovers(&paths);
    if !quiet {
        let human = match how {
            Stopped::WasNotRunning => format!("{name} was not running"),
            Stopped::Drained => format!("stopped {name}"),
            Stopped::Terminated => format!("stopped {name} (SIGTERM)"),
            Stopped::Killed => format!("killed {name} (SIGKILL after {} s)", timeout.as_secs()),
        };
        out.result(
            json!({"name": name, "state": "stopped", "how": how.as_str()}),
            &human,
        );
    }
    Ok(Code::Ok)
}

fn ask_to_shut_down(paths: &DaemonPaths, drain: Duration) -> bool {
    let Ok(mut client) =
        Client::connect(&crate::daemon::probe::control_socket(paths), PROBE_TIMEOUT)
    else {
        return false;
    };
    matches!(
        client.request(&Request::Shutdown {
            drain_ms: drain.as_millis() as u64
        }),
        Ok(Response::ShuttingDown)
    )
}

/// Waits until nobody holds the pid lock; true when that happened within `limit`.
fn wait_unlocked(paths: &DaemonPaths, limit: Duration) -> bool {
    wait_for(limit, &|| !is_locked(&paths.pid_file))
}

/// SIGTERM, then SIGKILL, to the daemon recorded in the locked pid file.
fn signal_escalation(paths: &DaemonPaths, timeout: Duration) -> Result<Stopped, CliError> {
    if !is_locked(&paths.pid_file) {
        return Ok(Stopped::Drained);
    }
    let record = read_record(&paths.pid_file).ok_or_else(|| {
        CliError::new(
            Code::Unknown,
            format!(
                "pid file {} is locked but unreadable",
                paths.pid_file.display()
            ),
        )
    })?;
    let source = format!("in {}", paths.pid_file.display());
    escalate(&record, &source, timeout, &|| !is_locked(&paths.pid_file))
}

/// Sends SIGTERM to the process `record` names, then SIGKILL when `gone` is still false
/// after `grace`; `Drained` when it was gone before any signal. Never signals a process
/// whose start time differs from the record (a reused pid): that is exit 4, naming
/// where the record came from (`source`).
pub(super) fn escalate(
    record: &PidRecord,
    source: &str,
    grace: Duration,
    gone: &dyn Fn() -> bool,
) -> Result<Stopped, CliError> {
    for (sig, result, limit) in [
        (Signal::SIGTERM, Stopped::Terminated, grace),
        (Signal::SIGKILL, Stopped::Killed, KILL_WAIT),
    ] {
        if gone() {
            return Ok(Stopped::Drained);
        }
        if !is_same_process(record) {
            return Err(CliError::new(
                Code::Unknown,
                format!(
                    "pid {} {source} is not the daemon that wrote it; not signalling it",
                    record.pid
                ),
            ));
        }
        let _ = kill(Pid::from_raw(record.pid as i32), sig);
        if wait_for(limit, gone) {
            return Ok(result);
        }
    }
    Err(CliError::failure(format!(
        "daemon pid {} survived SIGKILL",
        record.pid
    )))
}

/// Polls `done` until it is true (true) or `limit` passes (false).
pub(super) fn wait_for(limit: Duration, done: &dyn Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    done()
}
