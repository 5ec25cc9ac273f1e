//! Detaching a daemon from the CLI: fork, setsid, fork again, and report readiness back
//! through a pipe.
//!
//! Must be called while the process has a single thread (no tokio runtime, no spinner
//! thread, no tracing worker): `fork` only copies the calling thread.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, setsid, ForkResult};

use crate::exit::{CliError, Code};

/// What the detached daemon said before the deadline.
#[derive(Debug)]
pub enum StartReport {
    Ready {
        pid: u32,
    },
    Failed(String),
    /// The pipe closed without a word: the daemon died during startup.
    Died,
    TimedOut,
}

/// Forks a detached daemon that runs `daemon_main(ready_fd)` and waits for its report.
///
/// `keep_until_fork` (the start lock) is closed in the daemon right after the fork, so the
/// daemon never holds the start lock; the caller still does.
pub fn spawn_detached<L>(
    keep_until_fork: L,
    deadline: Duration,
    daemon_main: impl FnOnce(i32) -> Code,
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
                Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Child) => {}
                Err(_) => unsafe { libc::_exit(1) },
            }
            detach_stdio();
            let code = daemon_main(write_end.into_raw_fd());
            std::process::exit(code as i32);
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let _ = waitpid(child, None);
            Ok((wait_for_report(read_end, deadline), keep_until_fork))
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null and leaves the CLI's folder.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let _ = std::env::set_current_dir("/");
    // SAFETY: umask has no memory effects.
    unsafe { libc::umask(0o027) };
}

fn wait_for_report(read_end: OwnedFd, deadline: Duration) -> StartReport {
    let fd = read_end.as_raw_fd();
    let mut file = File::from(read_end);
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return StartReport::TimedOut;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            return StartReport::Died;
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) => return parse_report(&buf).unwrap_or(StartReport::Died),
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if let Some(report) = parse_report(&buf) {
                    return report;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return StartReport::Died,
        }
    }
}

/// A complete first line, if there is one.
fn parse_report(buf: &[u8]) -> Option<StartReport> {
    let text = String::from_utf8_lossy(buf);
    let line = text.split_once('\n')?.0;
    if let Some(pid) = line.strip_prefix("READY ") {
        return Some(StartReport::Ready {
            pid: pid.trim().parse().unwrap_or(0),
        });
    }
    Some(StartReport::Failed(
        line.strip_prefix("ERROR ").unwrap_or(line).to_string(),
    ))
}
