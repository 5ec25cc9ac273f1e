//! `daemon start`, `daemon run` and `daemon restart`.
//!
//! Start protocol (one daemon per name, whatever the number of concurrent starts):
//! 1. take the name's start lock (blocking, bounded by the start timeout);
//! 2. probe: a daemon that answers means "already running" (exit 0);
//! 3. otherwise clear leftovers of a dead daemon, fork the detached daemon and wait for
//!    its readiness report, then confirm with a socket round trip;
//! 4. if it did not become ready, make sure it is gone (SIGTERM, then SIGKILL) and its
//!    pid file and socket with it, so a failed start never leaves a daemon behind;
//! 5. release the start lock.

use std::fs::File;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::json;

use super::daemon_stop::{escalate, wait_for, Stopped};
use super::log_tail::{lines_since, LogMark};
use super::output::Output;
use crate::cli::{LaunchArgs, RestartArgs, RunArgs, StartArgs};
use crate::daemon::detach::{spawn_detached, Outcome, StartReport};
use crate::daemon::pidfile::{is_alive, open_lock_file, try_lock_exclusive, PidRecord, TryLock};
use crate::daemon::probe::{remove_leftovers, PROBE_TIMEOUT};
use crate::daemon::runtime::{self, ReadyPipe};
use crate::daemon::{probe, Down, Launch, Probe};
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::ipc::client::{Client, ClientError};
use crate::logging::RunMode;
use crate::paths::{io_error, DaemonPaths, Layout};

pub(crate) fn start(layout: &Layout, args: &StartArgs, out: &Output) -> CmdResult {
    let timeout = Duration::from_secs(args.timeout);
    start_daemon(layout, &args.launch, timeout, !args.no_wait_channel, out)
}

/// `daemon restart`: everything the new daemon needs is checked first (the same checks as
/// `start` makes before forking); a problem is exit 2 and the running daemon is left
/// alone. Only then is the old daemon stopped and the new one started.
pub(crate) fn restart(layout: &Layout, args: &RestartArgs, out: &Output) -> CmdResult {
    let timeout = Duration::from_secs(args.timeout);
    let paths = layout.daemon(&args.launch.name)?;
    // Held until the new daemon is up: a log FIFO's reader sees no end of file meanwhile.
    let _checked = preflight(&paths, &args.launch, &super::invocation(layout)).map_err(|e| {
        CliError::usage(format!(
            "{}\nnot restarting: daemon {:?} was left as it is",
            e.message, paths.name
        ))
    })?;
    super::daemon_stop::stop_daemon(
        layout,
        &args.launch.name,
        timeout,
        &Output::new(false),
        true,
    )?;
    // Something can still change between the check and the new start (a FIFO's reader
    // leaves, a file is swapped): then say plainly that the old daemon is gone.
    start_daemon(layout, &args.launch, timeout, !args.no_wait_channel, out).map_err(|e| {
        let message = format!(
            "{}\ndaemon {:?} was stopped for the restart and is not running now",
            e.message, paths.name
        );
        CliError { message, ..e }
    })
}

/// `daemon run`: the same daemon in the foreground.
pub(crate) fn run_foreground(layout: &Layout, args: &RunArgs) -> CmdResult {
    let paths = layout.daemon(&args.launch.name)?;
    let launch = super::launch::resolve(
        &paths,
        &args.launch,
        &super::invocation(layout),
        RunMode::Foreground,
    )?;
    launch.save(&paths)?;
    runtime::run(
        &paths,
        &launch,
        &super::workloads::Workloads,
        ReadyPipe::none(),
    )
}

/// Starts a detached daemon (or finds it running) and prints the outcome. Everything
/// that can be checked is checked before the fork (usage errors exit 2); a daemon that
/// does not become ready in `timeout` is stopped before this returns exit 1. With
/// `wait_channel`, "ready" includes DingTalk accepting a bot's channel credentials (see
/// [`wait_for_channel`]).
pub(crate) fn start_daemon(
    layout: &Layout,
    args: &LaunchArgs,
    timeout: Duration,
    wait_channel: bool,
    out: &Output,
) -> CmdResult {
    let me = super::invocation(layout);
    let paths = layout.daemon(&args.name)?;
    // A service user's folder (root, system layout) is for systemd to start from.
    paths.check_state_dir()?;
    let checked = preflight(&paths, args, &me)?;
    let launch = &checked.launch;
    let lock = StartLock::acquire(&paths.start_lock, timeout)?;

    match probe_settled(&paths, UNRESPONSIVE_GRACE.min(timeout)) {
        Probe::Running { pid, version } => {
            out.note(&format!(
                "daemon {:?} is already running (pid {pid})",
                paths.name
            ));
            out.result(
                json!({"name": paths.name, "state": "running", "pid": pid,
                       "version": version, "already_running": true}),
                &format!("{} already running (pid {pid})", paths.name),
            );
            return Ok(Code::Ok);
        }
        Probe::Down(Down::Unresponsive { pid, reason }) => {
            return Err(CliError::new(
                Code::Unknown,
                format!(
                    "daemon {:?} holds its pid lock (pid {}) but does not answer ({reason}); \
                     run `{me} daemon stop --name {}` first",
                    paths.name,
                    pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    paths.name
                ),
            )
            .fix(format!("{me} daemon stop --name {}", paths.name)))
        }
        Probe::Down(Down::Denied { reason }) => {
            return Err(CliError::new(Code::Unknown, reason).kind(ErrorKind::Permission))
        }
        Probe::Down(Down::UnsafeFolder { reason }) => {
            return Err(CliError::usage(reason).kind(ErrorKind::Permission))
        }
        Probe::Down(Down::Stale { .. } | Down::NotRunning) => remove_leftovers(&paths),
    }

    // A name that was not listed before is listed only once its daemon ran: a failed
    // first start leaves nothing in `daemon status` (its exit 3 would stay for good).
    let new_name = !paths.is_listed();
    launch.save(&paths)?;
    let limits = StartLimits {
        started: Instant::now(),
        timeout,
        wait_channel,
    };
    spawn_and_confirm(&paths, launch, lock, &limits, new_name, out)
}

/// Forks the daemon and waits for it (see [`start_daemon`]). On failure a `new_name` is
/// forgotten again, under the start lock, which is released last.
fn spawn_and_confirm(
    paths: &DaemonPaths,
    launch: &Launch,
    lock: StartLock,
    limits: &StartLimits,
    new_name: bool,
    out: &Output,
) -> CmdResult {
    let forget_if_new = |result: CmdResult| {
        if result.is_err() && new_name {
            super::daemon_rm::forget(paths);
        }
        result
    };
    let timeout = limits.timeout;
    let mark = LogMark::before_start(launch.log.file());
    let spawned = spawn_detached(lock, timeout, |pipe| {
        match runtime::run(
            paths,
            launch,
            &super::workloads::Workloads,
            ReadyPipe::to_start(pipe),
        ) {
            Ok(code) => code,
            Err(e) => e.code,
        }
    });
    let (report, lock) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => return forget_if_new(Err(e)),
    };
    let spinner = out.spinner(&format!("starting {}", paths.name));
    let result = forget_if_new(confirm(paths, launch, &mark, report, limits, out));
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    drop(lock);
    result
}

/// Everything a new daemon needs, checked without forking or stopping anything: the
/// launch settings and config, the state folder (ours, private, writable: it holds the
/// pid file, the start lock and the inbox), the socket folder, and the log (its folder
/// made, the file openable under the rules of `logging::open`).
/// How long `start` keeps probing a daemon that holds its pid lock but does not answer.
/// A process killed a moment ago (`kill -9 PID; clawdbot daemon start`) still holds the
/// lock until the kernel has torn it down, which takes longer on a loaded machine.
const UNRESPONSIVE_GRACE: Duration = Duration::from_secs(3);

/// [`probe`], asked again every 50 ms for up to `grace` while the answer is
/// "holds the lock but does not answer"; any other answer is returned at once.
fn probe_settled(paths: &DaemonPaths, grace: Duration) -> Probe {
    let until = Instant::now() + grace;
    loop {
        let p = probe(paths);
        if !matches!(p, Probe::Down(Down::Unresponsive { .. })) || Instant::now() >= until {
            return p;
        }
        sleep(Duration::from_millis(50));
    }
}

/// A launch that passed its checks. `_stream_writer` is the log FIFO's or device's writer
/// opened by the check (see [`crate::logging::check_log_path`]); it stays open until this
/// is dropped, after the new daemon has opened its own.
struct Checked {
    launch: Launch,
    _stream_writer: Option<std::fs::File>,
}

fn preflight(paths: &DaemonPaths, args: &LaunchArgs, me: &str) -> Result<Checked, CliError> {
    // Loads and checks the config (for its logging.target) as the daemon will.
    let launch = super::launch::resolve(paths, args, me, RunMode::Detached)?;
    paths.ensure_state_dir()?;
    crate::fsutil::probe_writable(&paths.state)
        .map_err(|e| io_error("create files in the state folder", &paths.state, e))?;
    paths.listen_socket()?;
    let mut stream_writer = None;
    if let Some(log) = launch.log.file() {
        crate::paths::ensure_parent(log)?;
        stream_writer = crate::logging::check_log_path(log).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => {
                CliError::usage(format!("log {}: {e}", log.display()))
            }
            _ => io_error("open log file", log, e).into(),
        })?;
    }
    Ok(Checked {
        launch,
        _stream_writer: stream_writer,
    })
}

/// How long a start may take and what it waits for.
struct StartLimits {
    started: Instant,
    timeout: Duration,
    /// Wait for DingTalk to accept a bot's channel credentials.
    wait_channel: bool,
}

fn confirm(
    paths: &DaemonPaths,
    launch: &Launch,
    mark: &LogMark,
    report: StartReport,
    limits: &StartLimits,
    out: &Output,
) -> CmdResult {
    let (started, timeout) = (limits.started, limits.timeout);
    let what = match &report.outcome {
        Outcome::Ready => {
            let left = timeout.saturating_sub(started.elapsed()).max(PROBE_TIMEOUT);
            match Client::connect(&crate::daemon::probe::control_socket(paths), left) {
                Ok(mut client) => {
                    let channel = match limits.wait_channel {
                        true => wait_for_channel(&mut client, started + timeout),
                        false => Ok(()),
                    };
                    match channel {
                        Ok(()) => return Ok(started_doc(paths, launch, &client, started, out)),
                        Err(why) => {
                            // Ready as a process, but "running" would lie: put it down.
                            let put_down = put_down(paths, report.daemon, &Outcome::TimedOut);
                            return Err(start_failure(
                                paths,
                                launch,
                                mark,
                                &format!("{why}{put_down}"),
                            ));
                        }
                    }
                }
                Err(e) => format!("it reported ready but its socket did not answer: {e}"),
            }
        }
        Outcome::Failed(msg) => msg.clone(),
        Outcome::Died => "it exited during startup".into(),
        Outcome::TimedOut => format!("no readiness within {} s", timeout.as_secs()),
    };
    let put_down = put_down(paths, report.daemon, &report.outcome);
    let failure = start_failure(paths, launch, mark, &format!("{what}{put_down}"));
    Err(match report.outcome {
        Outcome::TimedOut => failure.kind(ErrorKind::Timeout),
        _ => failure,
    })
}

/// The first wait before `start` asks a ready daemon again whether DingTalk accepted its
/// credentials; each later wait doubles, up to [`CHANNEL_POLL_MAX`].
const CHANNEL_POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two such questions.
const CHANNEL_POLL_MAX: Duration = Duration::from_millis(100);

/// The wait after the `asked`-th unanswered question (0-based): 5, 10, 20, 40, 80, then
/// 100 ms. Short at first because a channel on a near gateway is up within milliseconds
/// (a fixed 100 ms poll made most starts wait 100 ms for nothing; issue 12's bench), and
/// the question is one status request on the daemon's local socket.
fn channel_poll_delay(asked: u32) -> Duration {
    CHANNEL_POLL_FIRST
        .saturating_mul(1u32.checked_shl(asked).unwrap_or(u32::MAX))
        .min(CHANNEL_POLL_MAX)
}

/// Waits until `deadline` for the daemon's channel to authenticate for the first time
/// (stream: `connections/open` accepted and the WebSocket connected; HTTP mode: an access
/// token obtained). `Ok` at once for a daemon without a channel (a model service, or a bot
/// without a `channel:` section). `Err` names DingTalk's refusal (its answer, never the
/// secret), or, at the deadline, the channel's last error: a start that could not reach
/// DingTalk fails rather than report a bot that cannot receive anything as running.
fn wait_for_channel(client: &mut Client, deadline: Instant) -> Result<(), ChannelWait> {
    use crate::ipc::proto::{Request, Response};
    use crate::status::channel_auth::{OK as AUTH_OK, REFUSED as AUTH_REFUSED};
    let mut asked = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        client.set_timeout(left.max(PROBE_TIMEOUT));
        let channel = match client.request(&Request::Status) {
            Ok(Response::Status(report)) => report.channel,
            Ok(other) => return Err(ChannelWait::Socket(ClientError::unexpected(&other))),
            Err(e) => return Err(ChannelWait::Socket(e)),
        };
        let Some(channel) = channel else {
            return Ok(());
        };
        let last_error = || channel.last_error.clone().unwrap_or_else(|| "none".into());
        match channel.auth.as_str() {
            // An older daemon does not report `auth`: nothing to wait for.
            AUTH_OK | "" => return Ok(()),
            AUTH_REFUSED => return Err(ChannelWait::Refused(last_error())),
            _ if left.is_zero() => {
                return Err(ChannelWait::TimedOut {
                    state: channel.state.clone(),
                    last_error: last_error(),
                })
            }
            _ => sleep(channel_poll_delay(asked).min(left)),
        }
        asked = asked.saturating_add(1);
    }
}

/// Why a started daemon's channel is not up; `last_error` is DingTalk's answer, never the
/// secret.
#[derive(Debug, thiserror::Error)]
enum ChannelWait {
    #[error("its socket stopped answering: {0}")]
    Socket(ClientError),
    #[error(
        "DingTalk refused the channel's credentials: {0}; check channel.dingtalk.client_id and client_secret"
    )]
    Refused(String),
    #[error(
        "the DingTalk channel did not authenticate within the start timeout (state {state}, last error: {last_error}); check network access to channel.dingtalk.api_base, or start with --no-wait-channel"
    )]
    TimedOut { state: String, last_error: String },
}

/// Prints a started daemon's result.
fn started_doc(
    paths: &DaemonPaths,
    launch: &Launch,
    client: &Client,
    started: Instant,
    out: &Output,
) -> Code {
    let ms = started.elapsed().as_millis() as u64;
    out.result(
        json!({"name": paths.name, "state": "running", "pid": client.daemon_pid,
               "version": client.daemon_version, "log_path": launch.log.describe(),
               "already_running": false,
               "socket": crate::daemon::probe::control_socket(paths).display().to_string(), "ready_ms": ms}),
        &format!(
            "started {} (pid {}) in {ms} ms; log: {}",
            paths.name,
            client.daemon_pid,
            launch.log.describe()
        ),
    );
    Code::Ok
}

/// How long a daemon that reported a failure (or closed the pipe) may take to exit on
/// its own before it is signalled, and how long SIGTERM gets before SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Makes sure a daemon that did not start is gone: one that timed out gets SIGTERM at
/// once, one that failed gets [`EXIT_GRACE`] to exit first; SIGKILL follows after
/// [`EXIT_GRACE`]. Then its leftovers are removed. Returns what to add to the error.
fn put_down(paths: &DaemonPaths, daemon: Option<PidRecord>, outcome: &Outcome) -> String {
    let Some(record) = daemon else {
        remove_leftovers(paths);
        return String::new();
    };
    let gone = || !is_alive(&record);
    let exited = !matches!(outcome, Outcome::TimedOut) && wait_for(EXIT_GRACE, &gone);
    let note = if exited {
        String::new()
    } else {
        match escalate(&record, "(the daemon being started)", EXIT_GRACE, &gone) {
            Ok(Stopped::Killed) => format!("; stopped it with SIGKILL (pid {})", record.pid),
            Ok(_) => format!("; stopped it (pid {})", record.pid),
            Err(e) => format!("; could not stop it: {}", e.message),
        }
    };
    remove_leftovers(paths);
    note
}

/// "did not start: WHAT", with the last lines this start's daemon wrote to its log.
fn start_failure(paths: &DaemonPaths, launch: &Launch, mark: &LogMark, what: &str) -> CliError {
    let mut msg = format!("daemon {:?} did not start: {what}", paths.name);
    if let Some(log) = launch.log.file() {
        let tail = lines_since(log, mark, 20);
        if !tail.is_empty() {
            msg.push_str(&format!(
                "\nlast lines of {}:\n{}",
                log.display(),
                tail.join("\n")
            ));
        }
    }
    CliError::failure(msg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_is_asked_again_soon_at_first_then_at_most_every_100_ms() {
        let waits: Vec<u64> = (0..8)
            .map(|asked| channel_poll_delay(asked).as_millis() as u64)
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 100, 100, 100]);
        assert_eq!(channel_poll_delay(u32::MAX), CHANNEL_POLL_MAX);
        assert_eq!(channel_poll_delay(40), CHANNEL_POLL_MAX);
    }
}
