//! The last lines of a daemon's log, for `daemon logs` and for a failed start.
//!
//! Invariant: a failed start shows only lines its own daemon appended (after the
//! [`LogMark`] taken before the fork), never older content and never a file the daemon
//! could not write to (`--log /etc/passwd` shows nothing of that file).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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

/// The last `n` lines of the log at `path`. A missing file is no error (no lines); a
/// folder, FIFO or device, or a file this user cannot read, is an error naming it.
pub(super) fn last_lines(path: &Path, n: usize) -> Result<Vec<String>, CliError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read the log", path, e)),
    };
    if !meta.is_file() {
        return Err(CliError::failure(format!(
            "cannot read the log {}: it is {}, not a regular file",
            path.display(),
            crate::fsutil::kind_of(&meta)
        )));
    }
    let file = File::open(path).map_err(|e| io_error("read the log", path, e))?;
    tail_from(file, 0, n).map_err(|e| io_error("read the log", path, e))
}

/// The last `n` lines appended to `path` since `mark`: all of a file that is new (or was
/// replaced), nothing of a file that did not grow or cannot be read.
pub(super) fn lines_since(path: &Path, mark: &LogMark, n: usize) -> Vec<String> {
    let Ok(file) = File::open(path) else {
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
