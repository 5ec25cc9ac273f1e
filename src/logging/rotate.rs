//! A size-capped log file writer.
//!
//! Invariants:
//! - the active file is always at the configured path (so `tail -F` follows it);
//! - only a regular file is ever rotated: a character device (`/dev/null`) or a FIFO is
//!   written as is, never renamed, truncated or replaced (see [`super::open`]);
//! - it rotates before a write would push it past `max_bytes` (unless it is empty), so a
//!   record is never split across files;
//! - at most `max_files` rotated files are kept: `NAME.1` (newest) .. `NAME.max_files`;
//! - [`request_reopen`] (called from the SIGUSR1 handler) makes the next write reopen the
//!   path, for external logrotate setups that move the file away.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::open::{log_name, LogFolder, LogKind};

static REOPEN: AtomicBool = AtomicBool::new(false);
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
static LAST_WRITE_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Log write failures so far and the latest one (disk full, folder gone...). The daemon
/// keeps serving when its log cannot be written; `status` shows these.
pub(crate) fn write_errors() -> (u64, Option<String>) {
    let last = LAST_WRITE_ERROR.lock().map(|g| g.clone()).unwrap_or(None);
    (WRITE_ERRORS.load(Ordering::SeqCst), last)
}

pub(super) fn record_error(what: &str, path: &Path, e: &io::Error) {
    WRITE_ERRORS.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut g) = LAST_WRITE_ERROR.lock() {
        *g = Some(format!("cannot {what} log {}: {e}", path.display()));
    }
}

/// Counts a record the logging worker dropped because its buffer was full: the log's
/// writer could not keep up (a slow disk, a pipe nobody reads). Shown with the write
/// errors, since the record was not written.
pub(super) fn record_dropped() {
    WRITE_ERRORS.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut g) = LAST_WRITE_ERROR.lock() {
        *g = Some(
            "log records dropped: the log's writer could not keep up \
             (a slow disk, or a pipe nobody reads)"
                .to_string(),
        );
    }
}

/// Asks every [`RotatingFile`] to reopen its path before its next write.
pub(crate) fn request_reopen() {
    REOPEN.store(true, Ordering::SeqCst);
}

pub(crate) struct RotatingFile {
    path: PathBuf,
    /// The log's folder, held open: rotation renames inside it, never re-resolving `path`.
    folder: LogFolder,
    name: OsString,
    max_bytes: u64,
    max_files: usize,
    file: File,
    kind: LogKind,
    /// Bytes in the file plus `pending`.
    size: u64,
    /// Records taken since the last flush, written to the file in one `write` by
    /// [`Write::flush`] (the logging worker flushes after every batch, see
    /// [`super::worker`]), or as soon as they reach [`BATCH_BYTES`]. So a burst of records
    /// costs one syscall, and a kill -9 loses at most the batch being written and the
    /// records logged during the worker's last pause (10 ms, `worker::Settings::coalesce`;
    /// never more than the worker's 1 MiB buffer).
    pending: Vec<u8>,
}

/// The most bytes held before they are written without waiting for the flush.
const BATCH_BYTES: usize = 64 * 1024;

impl RotatingFile {
    /// Opens (appending to) `path`, creating its folder.
    pub(crate) fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<RotatingFile> {
        if let Some(parent) = path.parent() {
            crate::fsutil::create_dirs(parent)?;
        }
        let folder = LogFolder::of(path)?;
        let name = log_name(path)?;
        let (file, kind) = folder.open_log(&name)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            folder,
            name,
            max_bytes,
            max_files: max_files.max(1),
            file,
            kind,
            size,
            pending: Vec::with_capacity(BATCH_BYTES),
        })
    }

    /// Writes the held records to the current file in one call.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        self.pending.clear();
        if let Err(e) = &result {
            record_error("write", &self.path, e);
        }
        result
    }

    /// Path of the n-th rotated file.
    #[cfg(test)]
    fn rotated_path(path: &Path, n: usize) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Name of the n-th rotated file in the log's folder.
    fn rotated_name(&self, n: usize) -> OsString {
        let mut s = self.name.clone();
        s.push(format!(".{n}"));
        s
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let _ = self.folder.remove(&self.rotated_name(self.max_files));
        for n in (1..self.max_files).rev() {
            let from = self.rotated_name(n);
            if self.folder.exists(&from) {
                self.folder.rename(&from, &self.rotated_name(n + 1))?;
            }
        }
        self.folder.rename(&self.name, &self.rotated_name(1))?;
        self.reopen()
    }

    /// Reopens the log by name in its held folder (after rotation or SIGUSR1).
    fn reopen(&mut self) -> io::Result<()> {
        let (file, kind) = self.folder.open_log(&self.name)?;
        self.size = file.metadata()?.len();
        self.file = file;
        self.kind = kind;
        Ok(())
    }

    /// True when the next `incoming` bytes must go into a fresh file.
    fn must_rotate(&self, incoming: usize) -> bool {
        self.kind == LogKind::Regular
            && self.size > 0
            && self.size + incoming as u64 > self.max_bytes
    }
}

impl Write for RotatingFile {
    /// Writes the whole buffer (one log record) into one file. A failed reopen or
    /// rotation is recorded and writing goes on into the current file (no line lost for
    /// it); a failed write is recorded and reported to the caller.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if REOPEN.swap(false, Ordering::SeqCst) {
            // The held records belong to the file they were logged into.
            let _ = self.write_pending();
            if let Err(e) = self.reopen() {
                record_error("reopen", &self.path, &e);
            }
        }
        if self.must_rotate(buf.len()) {
            let _ = self.write_pending();
            if let Err(e) = self.rotate() {
                record_error("rotate", &self.path, &e);
            }
        }
        self.pending.extend_from_slice(buf);
        self.size += buf.len() as u64;
        if self.pending.len() >= BATCH_BYTES {
            self.write_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.flush()
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn rotates_by_size_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bot.log");
        let mut w = RotatingFile::open(&path, 1000, 50).unwrap();
        for i in 0..500 {
            w.write_all(format!("line {i:05} ........................\n").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
        let mut all = Vec::new();
        for n in (1..=50).rev() {
            if let Ok(t) = fs::read_to_string(RotatingFile::rotated_path(&path, n)) {
                assert!(t.len() as u64 <= 1000, "rotated file {n} too big");
                all.extend(t.lines().map(str::to_string));
            }
        }
        all.extend(
            fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
        let expect: Vec<String> = (0..500)
            .map(|i| format!("line {i:05} ........................"))
            .collect();
        assert_eq!(all, expect);
    }

    /// Records are held until the logging worker's flush (one write for the pass), and
    /// none is lost: not at the flush, not when the file is dropped at exit.
    #[test]
    fn records_are_written_in_one_batch_at_flush_and_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.log");
        let mut w = RotatingFile::open(&path, 1 << 20, 3).unwrap();
        for i in 0..100 {
            w.write_all(format!("record {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "",
            "held until the flush"
        );
        w.flush().unwrap();
        let flushed = fs::read_to_string(&path).unwrap();
        assert_eq!(flushed.lines().count(), 100);
        w.write_all(b"last record\n").unwrap();
        drop(w);
        let all = fs::read_to_string(&path).unwrap();
        assert!(all.ends_with("record 99\nlast record\n"), "{all}");
    }

    #[test]
    fn a_fifo_is_written_as_is_and_never_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe.log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // The reader's end is open before the log opens (a FIFO nobody reads is refused):
        // opened without waiting, then made blocking, and read once a writer exists.
        let mut options = fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::custom_flags(options.read(true), libc::O_NONBLOCK);
        let mut read_end = options.open(&path).unwrap();
        let mut w = RotatingFile::open(&path, 100, 3).unwrap();
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&read_end),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut read_end, &mut bytes).unwrap();
            bytes.len()
        });
        for _ in 0..20 {
            w.write_all(&[b'a'; 60]).unwrap();
        }
        drop(w);
        assert_eq!(
            reader.join().unwrap(),
            20 * 60,
            "every byte reached the reader"
        );
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
        assert!(!RotatingFile::rotated_path(&path, 1).exists());
    }

    /// Red-team F1: rotation stays in the folder that was checked and opened, even when
    /// the path is re-pointed (the folder moved away, a link to another folder put in
    /// its place) after the log was opened.
    #[test]
    fn rotation_stays_in_the_folder_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("logs");
        fs::create_dir(&first).unwrap();
        let path = first.join("bot.log");
        let mut w = RotatingFile::open(&path, 100, 2).unwrap();
        w.write_all(&[b'a'; 60]).unwrap();
        let moved = dir.path().join("moved");
        fs::rename(&first, &moved).unwrap();
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("bot.log"), "keep\n").unwrap();
        fs::write(other.join("bot.log.1"), "keep too\n").unwrap();
        std::os::unix::fs::symlink(&other, &first).unwrap();
        for _ in 0..5 {
            w.write_all(&[b'b'; 60]).unwrap();
        }
        assert_eq!(fs::read_to_string(other.join("bot.log")).unwrap(), "keep\n");
        assert_eq!(
            fs::read_to_string(other.join("bot.log.1")).unwrap(),
            "keep too\n"
        );
        assert!(!other.join("bot.log.2").exists());
        assert!(
            moved.join("bot.log.2").exists(),
            "rotated where it was opened"
        );
    }

    #[test]
    fn keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut w = RotatingFile::open(&path, 100, 3).unwrap();
        for _ in 0..100 {
            w.write_all(&[b'a'; 60]).unwrap();
        }
        assert!(RotatingFile::rotated_path(&path, 3).exists());
        assert!(!RotatingFile::rotated_path(&path, 4).exists());
    }
}
