//! Detaching a daemon from the CLI: fork, setsid, fork again, and report readiness back
//! through a pipe.
//!
//! Must be called while the process has a single thread (no tokio runtime, no spinner
//! thread, no tracing worker): `fork` only copies the calling thread.
//!
//! Why this module keeps `unsafe`: `fork` itself (nix marks it unsafe: only the calling
//! thread is copied, so it is sound only while there is one) and `_exit` in the
//! intermediate child (a foreign call with no preconditions; std offers no exit that
//! skips the parent's buffered output and atexit handlers). Everything else (`dup2`,
//! `umask`, `poll`) goes through nix's safe wrappers.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, fork, pipe2, setsid, ForkResult};

use super::pidfile::{my_record, PidRecord};
use crate::exit::{CliError, Code};

/// What the detached daemon said before the deadline.
#[derive(Debug)]
pub(crate) struct StartReport {
    pub(crate) outcome: Outcome,
    /// The daemon process, from the first line it sends (before anything can fail), so
    /// that a start that fails or times out can make sure it is gone.
    pub(crate) daemon: Option<PidRecord>,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Ready,
    Failed(String),
    /// The pipe closed without a word: the daemon died during startup.
    Died,
    TimedOut,
}

/// Forks a detached daemon that runs `daemon_main(pipe)` (the pipe's write end, owned by
/// the daemon from then on) and waits for its report.
///
/// The pipe protocol, one line each: `PID <pid> <start ticks>` at once, then
/// `READY <pid>` or `ERROR <message>`.
///
/// `keep_until_fork` (the start lock) is closed in the daemon right after the fork, so the
/// daemon never holds the start lock; the caller still does.
pub(crate) fn spawn_detached<L>(
    keep_until_fork: L,
    deadline: Duration,
    daemon_main: impl FnOnce(File) -> Code,
) -> Result<(StartReport, L), CliError> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| CliError::failure(format!("cannot create the readiness pipe: {e}")))?;
    // SAFETY: single-threaded at this point (see module docs).
    match unsafe { fork() }.map_err(|e| CliError::failure(format!("fork failed: {e}")))? {
        ForkResult::Child => {
            drop(keep_until_fork);
            drop(read_end);
            let _ = setsid();
            // SAFETY: still single-threaded in the child.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) => exit_at_once(0),
                Ok(ForkResult::Child) => {}
                Err(_) => exit_at_once(1),
            }
            let mut report = File::from(write_end);
            let me = my_record();
            let _ = writeln!(report, "PID {} {}", me.pid, me.start_ticks);
            detach_stdio();
            let code = daemon_main(report);
            std::process::exit(code as i32);
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let _ = waitpid(child, None);
            Ok((wait_for_report(read_end, deadline), keep_until_fork))
        }
    }
}

/// Ends the intermediate child at once: no atexit handlers, no flush of the stdio
/// buffers it copied from the CLI (the CLI writes those itself).
fn exit_at_once(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it is `unsafe` only as a foreign function.
    unsafe { libc::_exit(code) }
}

/// Points stdin, stdout and stderr at /dev/null and leaves the CLI's folder.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            let _ = dup2(null.as_raw_fd(), fd);
        }
    }
    let _ = std::env::set_current_dir("/");
    umask(Mode::from_bits_truncate(0o027));
}

fn wait_for_report(read_end: OwnedFd, deadline: Duration) -> StartReport {
    let mut lines = Lines::default();
    let outcome = read_outcome(read_end, deadline, &mut lines);
    StartReport {
        outcome,
        daemon: lines.daemon,
    }
}

fn read_outcome(read_end: OwnedFd, deadline: Duration, lines: &mut Lines) -> Outcome {
    let mut file = File::from(read_end);
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Outcome::TimedOut;
        }
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return Outcome::Died,
        }
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) => return Outcome::Died,
            Ok(k) => {
                if let Some(outcome) = lines.feed(&chunk[..k]) {
                    return outcome;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Outcome::Died,
        }
    }
}

/// The report lines read so far.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    daemon: Option<PidRecord>,
}

impl Lines {
    /// Takes in bytes; the outcome once a `READY` or `ERROR` line is complete.
    fn feed(&mut self, bytes: &[u8]) -> Option<Outcome> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if let Some(outcome) = self.line(&line) {
                return Some(outcome);
            }
        }
        None
    }

    fn line(&mut self, line: &str) -> Option<Outcome> {
        if let Some(rest) = line.strip_prefix("PID ") {
            let mut parts = rest.split_whitespace().map(str::parse::<u64>);
            if let (Some(Ok(pid)), Some(Ok(start_ticks))) = (parts.next(), parts.next()) {
                self.daemon = u32::try_from(pid)
                    .ok()
                    .map(|pid| PidRecord { pid, start_ticks });
            }
            return None;
        }
        if line.starts_with("READY ") {
            return Some(Outcome::Ready);
        }
        Some(Outcome::Failed(
            line.strip_prefix("ERROR ").unwrap_or(line).to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_line_comes_first_and_split_lines_are_joined() {
        let mut lines = Lines::default();
        assert!(lines.feed(b"PID 42 7").is_none());
        assert!(lines.feed(b"\nREA").is_none());
        assert_eq!(
            lines.daemon,
            Some(PidRecord {
                pid: 42,
                start_ticks: 7
            })
        );
        assert!(matches!(lines.feed(b"DY 42\n"), Some(Outcome::Ready)));
        let mut lines = Lines::default();
        match lines.feed(b"ERROR cannot open /x: denied\n") {
            Some(Outcome::Failed(m)) => assert_eq!(m, "cannot open /x: denied"),
            other => panic!("{other:?}"),
        }
        assert!(lines.daemon.is_none());
    }
}
