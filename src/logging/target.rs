//! Where a daemon's log goes: a file (rotated by size) or the process's stderr (for
//! journald and container runtimes, which collect a service's stderr themselves).
//!
//! Choice, first match wins (see [`choose`]):
//! 1. `--log PATH` or `--log -` (stderr);
//! 2. the config's `logging.target: stderr | file`;
//! 3. `logging.target: auto` (the default) in the foreground (`daemon run`): stderr when
//!    systemd connected stderr to the journal (`JOURNAL_STREAM` names stderr's device and
//!    inode) or when running in a container (`/run/.containerenv`, `/.dockerenv`, or the
//!    `container` variable);
//! 4. the log file of the last launch, else the default log file.
//!
//! Invariant: a detached daemon (`daemon start`) never logs to stderr (it has none): an
//! explicit stderr choice there is a usage error, and `auto` means the file.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LogTargetSetting;

/// The spelling of "stderr" on the command line and in the saved launch (`--log -`).
pub(crate) const STDERR_ARG: &str = "-";

/// A resolved log destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PathBuf", into = "PathBuf")]
pub(crate) enum LogTarget {
    /// Lines written to the process's stderr as they come; never rotated.
    Stderr,
    /// A log file, rotated by size (see [`super::RotatingFile`]).
    File(PathBuf),
}

impl LogTarget {
    /// Parses a `--log` value: `-` is stderr, anything else a path (`./-` for a file
    /// named "-").
    pub(crate) fn from_arg(arg: &Path) -> LogTarget {
        if arg.as_os_str() == STDERR_ARG {
            LogTarget::Stderr
        } else {
            LogTarget::File(arg.to_path_buf())
        }
    }

    /// The file, when the log is one.
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            LogTarget::File(p) => Some(p),
            LogTarget::Stderr => None,
        }
    }

    /// How `status` and `daemon start` show it: the path, or "stderr".
    pub(crate) fn describe(&self) -> String {
        match self {
            LogTarget::File(p) => p.display().to_string(),
            LogTarget::Stderr => "stderr".into(),
        }
    }
}

impl From<PathBuf> for LogTarget {
    fn from(p: PathBuf) -> LogTarget {
        LogTarget::from_arg(&p)
    }
}

impl From<LogTarget> for PathBuf {
    fn from(t: LogTarget) -> PathBuf {
        match t {
            LogTarget::Stderr => PathBuf::from(STDERR_ARG),
            LogTarget::File(p) => p,
        }
    }
}

/// How a running daemon's log is shown by `status`: the path, or "stderr" with the
/// collector this process sees (`stderr (journald)`, `stderr (container)`).
pub(crate) fn describe_running(target: &LogTarget) -> String {
    match (target, detect_collector()) {
        (LogTarget::Stderr, Some(Collector::Journald)) => "stderr (journald)".into(),
        (LogTarget::Stderr, Some(Collector::Container)) => "stderr (container)".into(),
        (t, _) => t.describe(),
    }
}

/// How the daemon is being run: decides whether stderr exists to log to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// `daemon run`: stderr is whatever the caller (systemd, a container runtime, a
    /// terminal) gave the process.
    Foreground,
    /// `daemon start` / `restart`: the daemon is detached, stderr is /dev/null.
    Detached,
}

/// What the environment says about the foreground process's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collector {
    /// systemd connected stderr to the journal.
    Journald,
    /// A container runtime collects stderr (`docker logs`, `podman logs`).
    Container,
}

/// The collector of this process's stderr, if any (see the module docs). A systemd unit's
/// `LogsDirectory=` (`$LOGS_DIRECTORY`) without the journal on stderr means the service asked
/// for a log file: that wins over the container markers (a unit run inside a container).
pub(crate) fn detect_collector() -> Option<Collector> {
    if stderr_is_journal_stream(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        Some(Collector::Journald)
    } else if in_container() && std::env::var_os("LOGS_DIRECTORY").is_none() {
        Some(Collector::Container)
    } else {
        None
    }
}

/// True when `journal_stream` ("DEVICE:INODE", as systemd sets `JOURNAL_STREAM`) names
/// this process's stderr. A child that inherited the variable but whose stderr was
/// redirected elsewhere does not match (systemd.exec(5) asks programs to check this).
fn stderr_is_journal_stream(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.trim().parse::<u64>(), ino.trim().parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .or_else(|_| std::fs::metadata("/dev/stderr"))
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// True inside a podman/docker/nspawn container.
fn in_container() -> bool {
    std::env::var_os("container").is_some_and(|v| !v.is_empty())
        || Path::new("/run/.containerenv").exists()
        || Path::new("/.dockerenv").exists()
}

/// A stderr log asked for where there is no stderr.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TargetError {
    #[error(
        "--log - (stderr) is for `daemon run` in the foreground (systemd, containers): \
         `daemon start` runs in the background and has no stderr; pass --log FILE"
    )]
    StderrFlagDetached,
    #[error(
        "the config sets logging.target: stderr, which is for `daemon run` in the foreground \
         (systemd, containers): `daemon start` runs in the background and has no stderr; \
         pass --log FILE or set logging.target: file"
    )]
    StderrConfigDetached,
}

/// Picks the log target (see the module docs). `flag` is `--log` (made absolute),
/// `previous` the last launch's target, `collector` what [`detect_collector`] found.
pub(crate) fn choose(
    flag: Option<LogTarget>,
    setting: LogTargetSetting,
    mode: RunMode,
    collector: Option<Collector>,
    previous: Option<LogTarget>,
    default_file: &Path,
) -> Result<LogTarget, TargetError> {
    let file = || {
        previous
            .clone()
            .filter(|p| p.file().is_some())
            .unwrap_or_else(|| LogTarget::File(default_file.to_path_buf()))
    };
    let chosen = match (flag, setting) {
        (Some(LogTarget::Stderr), _) if mode == RunMode::Detached => {
            return Err(TargetError::StderrFlagDetached)
        }
        (Some(t), _) => t,
        (None, LogTargetSetting::Stderr) if mode == RunMode::Detached => {
            return Err(TargetError::StderrConfigDetached)
        }
        (None, LogTargetSetting::Stderr) => LogTarget::Stderr,
        (None, LogTargetSetting::File) => file(),
        (None, LogTargetSetting::Auto) if mode == RunMode::Foreground && collector.is_some() => {
            LogTarget::Stderr
        }
        (None, LogTargetSetting::Auto) => file(),
    };
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "/logs/bot.log";

    fn pick(
        flag: Option<&str>,
        setting: LogTargetSetting,
        mode: RunMode,
        collector: Option<Collector>,
        previous: Option<&str>,
    ) -> Result<LogTarget, TargetError> {
        choose(
            flag.map(|f| LogTarget::from_arg(Path::new(f))),
            setting,
            mode,
            collector,
            previous.map(|p| LogTarget::from_arg(Path::new(p))),
            Path::new(DEFAULT),
        )
    }

    fn file(p: &str) -> LogTarget {
        LogTarget::File(p.into())
    }

    #[test]
    fn the_flag_wins_and_stderr_is_refused_for_a_detached_daemon() {
        use LogTargetSetting::*;
        use RunMode::*;
        let journald = Some(Collector::Journald);
        assert_eq!(
            pick(Some("/x.log"), Stderr, Foreground, journald, None),
            Ok(file("/x.log"))
        );
        assert_eq!(
            pick(Some("-"), File, Foreground, None, None),
            Ok(LogTarget::Stderr)
        );
        assert_eq!(
            pick(Some("-"), Auto, Detached, None, None),
            Err(TargetError::StderrFlagDetached)
        );
        assert_eq!(
            pick(None, Stderr, Detached, None, None),
            Err(TargetError::StderrConfigDetached)
        );
        assert_eq!(
            pick(Some("./-"), Auto, Detached, None, None),
            Ok(file("./-"))
        );
    }

    #[test]
    fn auto_means_stderr_only_in_the_foreground_under_a_collector() {
        use LogTargetSetting::*;
        use RunMode::*;
        for c in [Collector::Journald, Collector::Container] {
            assert_eq!(
                pick(None, Auto, Foreground, Some(c), Some("/old.log")),
                Ok(LogTarget::Stderr)
            );
            assert_eq!(pick(None, Auto, Detached, Some(c), None), Ok(file(DEFAULT)));
            assert_eq!(
                pick(None, File, Foreground, Some(c), None),
                Ok(file(DEFAULT))
            );
        }
        assert_eq!(
            pick(None, Auto, Foreground, None, Some("/old.log")),
            Ok(file("/old.log"))
        );
        // A remembered stderr launch is not a file to go back to.
        assert_eq!(
            pick(None, Auto, Detached, None, Some("-")),
            Ok(file(DEFAULT))
        );
    }

    #[test]
    fn journal_stream_must_name_this_process_stderr() {
        assert!(!stderr_is_journal_stream(None));
        assert!(!stderr_is_journal_stream(Some("garbage")));
        assert!(!stderr_is_journal_stream(Some("1:x")));
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        let mine = format!("{}:{}", m.dev(), m.ino());
        assert!(stderr_is_journal_stream(Some(&mine)));
        let other = format!("{}:{}", m.dev(), m.ino().wrapping_add(1));
        assert!(!stderr_is_journal_stream(Some(&other)));
    }

    #[test]
    fn the_saved_form_round_trips_and_old_launch_files_still_read() {
        let json = serde_json::to_string(&LogTarget::Stderr).unwrap();
        assert_eq!(json, "\"-\"");
        let back: LogTarget = serde_json::from_str(&json).unwrap();
        assert_eq!(back, LogTarget::Stderr);
        let old: LogTarget = serde_json::from_str("\"/var/log/clawdbot/b.log\"").unwrap();
        assert_eq!(old, file("/var/log/clawdbot/b.log"));
    }
}
