//! The last lines of a daemon's log, for `daemon logs` and for a failed start.
//!
//! Invariant: a failed start shows only lines its own daemon appended (after the
//! [`LogMark`] taken before the fork), never older content and never a file the daemon
//! could not write to (`--log /etc/passwd` shows nothing of that file).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::exit::CliError;
use crate::paths::io_error;

/// At most this much of a log is read for a tail (the end of it).
const MAX_TAIL_BYTES: u64 = 1024 * 1024;

/// Where a log file ended before a daemon was started: its inode and length (none when
/// the file did not exist, or was not a regular file).
pub(super) struct LogMark(Option<(u64, u64)>);

impl LogMark {
    /// The mark of the log at `path` (nothing when the daemon logs to no file).
    pub(super) fn before_start(path: Option<&Path>) -> LogMark {
        LogMark(
            path.and_then(|p| std::fs::metadata(p).ok())
                .filter(|m| m.is_file())
                .map(|m| (m.ino(), m.len())),
        )
    }
}

/// When a log line was written: the leading timestamp of a text line, or the `timestamp`
/// field of a JSON line (`logging.format: json`).
pub(super) fn line_time(line: &str) -> Option<SystemTime> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return humantime::parse_rfc3339_weak(v.get("timestamp")?.as_str()?).ok();
    }
    humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()
}

/// Each line with the time it was written; a line without a timestamp of its own (a
/// continuation) takes the one before it.
pub(super) fn timed(lines: Vec<String>) -> Vec<(Option<SystemTime>, String)> {
    let mut last = None;
    lines
        .into_iter()
        .map(|l| {
            last = line_time(&l).or(last);
            (last, l)
        })
        .collect()
}

/// The last `n` lines of the log at `path` written at or after `since` (all when `None`).
/// A missing file is no error (no lines); a folder, FIFO or device, or a file this user
/// cannot read, is an error naming it.
pub(super) fn recent_lines(
    path: &Path,
    n: usize,
    since: Option<SystemTime>,
) -> Result<Vec<(Option<SystemTime>, String)>, CliError> {
    let all = timed(last_lines(path, usize::MAX)?);
    let kept: Vec<_> = match since {
        Some(since) => all
            .into_iter()
            .filter(|(t, _)| t.is_some_and(|t| t >= since))
            .collect(),
        None => all,
    };
    let skip = kept.len().saturating_sub(n);
    Ok(kept.into_iter().skip(skip).collect())
}

/// The last `n` lines of the log at `path`. A missing file is no error (no lines); a
/// folder, FIFO or device, or a file this user cannot read, is an error naming it.
fn last_lines(path: &Path, n: usize) -> Result<Vec<String>, CliError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read the log", path, e).into()),
    };
    if !meta.is_file() {
        return Err(CliError::failure(format!(
            "cannot read the log {}: it is {}, not a regular file",
            path.display(),
            crate::fsutil::kind_of(&meta)
        )));
    }
    let file = open_regular(path).map_err(|e| CliError::from(io_error("read the log", path, e)))?;
    tail_from(file, 0, n).map_err(|e| CliError::from(io_error("read the log", path, e)))
}

/// The last `n` lines appended to `path` since `mark`: all of a file that is new (or was
/// replaced), nothing of a file that did not grow or cannot be read.
pub(super) fn lines_since(path: &Path, mark: &LogMark, n: usize) -> Vec<String> {
    let Ok(file) = open_regular(path) else {
        return Vec::new();
    };
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    if !meta.is_file() {
        return Vec::new();
    }
    let from = match mark.0 {
        Some((ino, len)) if ino == meta.ino() => len,
        _ => 0,
    };
    tail_from(file, from, n).unwrap_or_default()
}

/// Opens `path` for reading without waiting: a FIFO put there since it was checked would
/// otherwise block the open until a writer comes (`O_NONBLOCK`; the caller checks the
/// descriptor is a regular file).
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// The last `n` lines of `file` from byte `from` on (at most [`MAX_TAIL_BYTES`] of its
/// end); bytes that are not UTF-8 are shown as U+FFFD.
fn tail_from(mut file: File, from: u64, n: usize) -> io::Result<Vec<String>> {
    let len = file.metadata()?.len();
    let start = from.max(len.saturating_sub(MAX_TAIL_BYTES));
    if start >= len {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_text_json_and_continuation_lines() {
        let t = |s: &str| humantime::parse_rfc3339_weak(s).unwrap();
        let lines = vec![
            "no time yet".to_string(),
            "2026-11-30T23:15:28.178136Z  INFO x: y".to_string(),
            "  continued".to_string(),
            r#"{"timestamp":"2026-11-30T23:16:00Z","level":"INFO"}"#.to_string(),
        ];
        let got: Vec<_> = timed(lines).into_iter().map(|(t, _)| t).collect();
        let first = t("2026-11-30T23:15:28.178136Z");
        assert_eq!(
            got,
            [
                None,
                Some(first),
                Some(first),
                Some(t("2026-11-30T23:16:00Z"))
            ]
        );
    }
}
