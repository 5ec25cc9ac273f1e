//! One run of the supervised command: a child in its own process group, its output
//! forwarded line by line into the daemon's log, and a group-wide stop.
//!
//! Invariants:
//! - the child leads a fresh process group (pgid == its pid), so signals sent to the
//!   group reach everything it started that did not leave the group on purpose;
//! - while a [`ProcessGroup`] is armed, dropping it SIGKILLs the group: a supervisor task
//!   that is cancelled (runtime shutdown, second SIGTERM) leaves nothing behind;
//! - the child gets `PR_SET_PDEATHSIG(SIGTERM)`, so even a SIGKILLed daemon does not
//!   leave the group leader running (the kernel ties this to the spawning thread; the
//!   daemon's runtime threads live as long as the daemon);
//! - the guard is disarmed only once the group is seen empty, so a pgid the kernel may
//!   reuse later is never signalled.
//!
//! Why this module keeps one `unsafe`: `pre_exec` (std marks it unsafe: the closure runs
//! in the forked child before exec, where only async-signal-safe calls are sound). No
//! safe API sets the parent-death signal of a spawned child.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, getppid, Pid};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use crate::cmdline::CommandLine;
use crate::logging::MODEL_SERVICE_OUTPUT_TARGET as OUTPUT_TARGET;

/// Longer output lines are logged in pieces of this many bytes.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// How often an exited leader's group is checked for leftover members.
const GROUP_POLL: Duration = Duration::from_millis(25);

/// How long to wait for the group after SIGKILL before giving up on it.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// A child's process group.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Pid,
    armed: bool,
}

impl ProcessGroup {
    /// Sends `sig` to every member; a group that is already empty is not an error.
    fn signal(&self, sig: Signal) {
        if self.armed {
            if let Err(e) = killpg(self.pgid, sig) {
                if e != Errno::ESRCH {
                    tracing::warn!(pgid = self.pgid.as_raw(), signal = %sig, error = %e, "cannot signal the model service's process group");
                }
            }
        }
    }

    /// True when no process is left in the group (then the guard disarms itself).
    fn check_empty(&mut self) -> bool {
        if self.armed && killpg(self.pgid, None) == Err(Errno::ESRCH) {
            self.armed = false;
        }
        !self.armed
    }

    /// Polls until the group is empty or `deadline`; true when it emptied.
    async fn wait_empty(&mut self, deadline: Instant) -> bool {
        loop {
            if self.check_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(GROUP_POLL).await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// A started child and the group it leads.
#[derive(Debug)]
pub(crate) struct RunningChild {
    child: Child,
    group: ProcessGroup,
    pid: u32,
}

impl RunningChild {
    /// Starts `cmd` with stdin on /dev/null and its stdout and stderr forwarded to the log.
    pub(crate) fn spawn(cmd: &CommandLine) -> io::Result<RunningChild> {
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let parent = getpid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, through nix's thin wrappers); it allocates nothing
        // and takes no lock.
        unsafe {
            command.pre_exec(move || {
                set_pdeathsig(Signal::SIGTERM)?;
                // The daemon died before the prctl took effect: do not outlive it.
                if getppid() != parent {
                    return Err(Errno::ESRCH.into());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
        let group = ProcessGroup {
            pgid: Pid::from_raw(pid as i32),
            armed: true,
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, "stdout", pid));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, "stderr", pid));
        }
        Ok(RunningChild { child, group, pid })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the group leader to exit. Cancel-safe; once it has exited, returns the
    /// same status again at once.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the whole group: SIGTERM, up to `grace` for the leader and every member to
    /// exit, then SIGKILL. Also used after the leader exited by itself, to clear members
    /// it left behind. Returns the leader's exit status when it could be collected.
    pub(crate) async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        if self.group.check_empty() {
            return self.child.try_wait().ok().flatten();
        }
        self.group.signal(Signal::SIGTERM);
        let mut status = timeout(grace, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if status.is_none() || !self.group.wait_empty(deadline).await {
            tracing::warn!(
                pid = self.pid,
                grace_ms = grace.as_millis() as u64,
                "model service did not stop after SIGTERM; sending SIGKILL"
            );
            self.group.signal(Signal::SIGKILL);
            let kill_deadline = Instant::now() + AFTER_KILL;
            if status.is_none() {
                status = timeout(AFTER_KILL, self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            if !self.group.wait_empty(kill_deadline).await {
                tracing::error!(
                    pgid = self.pid,
                    "model service process group still has members after SIGKILL"
                );
            }
        }
        status
    }
}

/// How an exit status reads in reports: `exit code 1` or `killed by SIGKILL`.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "exit status unknown".to_string(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("killed by {name}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            (None, None) => format!("ended ({s})"),
        },
    }
}

/// Logs each output line of the child under [`OUTPUT_TARGET`] until end of file. Invalid
/// UTF-8 is replaced; lines over [`MAX_LINE_BYTES`] are split, so a child that never
/// writes a newline cannot grow the daemon's memory.
async fn forward_lines(stream: impl AsyncRead + Unpin, name: &'static str, pid: u32) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        let (done, used, eof) = match reader.fill_buf().await {
            Err(e) => {
                tracing::warn!(pid, stream = name, error = %e, "cannot read the model service's output");
                break;
            }
            Ok([]) => (true, 0, true),
            Ok(buf) => {
                let room = MAX_LINE_BYTES - line.len();
                match buf.iter().take(room).position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        (true, i + 1, false)
                    }
                    None => {
                        let n = buf.len().min(room);
                        line.extend_from_slice(&buf[..n]);
                        (line.len() >= MAX_LINE_BYTES, n, false)
                    }
                }
            }
        };
        reader.consume(used);
        if done && !line.is_empty() {
            let text = String::from_utf8_lossy(&line);
            tracing::info!(target: OUTPUT_TARGET, pid, stream = name, "{}", text.trim_end_matches('\r'));
            line.clear();
        }
        if eof {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::daemon::pidfile::is_running as alive;

    #[tokio::test]
    async fn natural_exit_is_described() {
        let mut c = RunningChild::spawn(&CommandLine::sh("exit 3")).expect("spawn sh");
        let status = c.wait().await.ok();
        assert_eq!(describe_exit(status), "exit code 3");
        assert_eq!(
            describe_exit(c.stop(Duration::from_secs(1)).await),
            "exit code 3"
        );
    }

    #[tokio::test]
    async fn stop_kills_the_group_including_term_ignoring_members() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pidfile = dir.path().join("bg");
        let script = format!(
            "trap '' TERM; sleep 600 & echo $! > {}; wait",
            pidfile.display()
        );
        let c = RunningChild::spawn(&CommandLine::sh(&script)).expect("spawn sh");
        let leader = c.pid();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let bg = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "background pid never written"
            );
            sleep(Duration::from_millis(20)).await;
        };
        let status = c.stop(Duration::from_millis(300)).await;
        assert_eq!(describe_exit(status), "killed by SIGKILL");
        assert!(!alive(leader) && !alive(bg));
    }

    #[tokio::test]
    async fn dropping_a_child_kills_its_group() {
        let c = RunningChild::spawn(&CommandLine::sh("sleep 600")).expect("spawn sh");
        let pid = c.pid();
        drop(c);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child survived its guard"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}
