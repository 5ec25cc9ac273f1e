//! The pid file, held under an exclusive `flock` for the daemon's whole life.
//!
//! Invariants:
//! - a daemon is alive exactly while some process holds the lock; a pid file whose lock is
//!   free is stale, whatever pid it names;
//! - the file holds `PID START_TICKS` on its first line, where START_TICKS is the process
//!   start time from `/proc/PID/stat`, so a signal is only ever sent to the process that
//!   wrote the file (a reused pid has another start time); a record without a real start
//!   time (0, missing or unparsable) names no process at all;
//! - the rest of the file (after the first newline, without the final one) is the path of
//!   the control socket the daemon listens on; the record is only ever replaced whole
//!   (a locked copy renamed over it), so a reader never sees half of it;
//! - the file is never opened through a symbolic link.
//!
//! Locks are taken with rustix's `flock`, which leaves the lock's life to the descriptor
//! (it ends when the last copy closes). nix's `Flock` would unlock explicitly when
//! dropped, and `flock` locks belong to the open file shared across `fork`: the forked
//! daemon closing its copy of the start lock would release the lock its parent `daemon
//! start` still holds.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use crate::fsutil::{create_private, open_nofollow, open_private, read_nofollow};

/// Result of trying to take a lock file without waiting.
pub enum TryLock {
    Acquired(File),
    HeldByOther,
}

/// Takes an exclusive flock on `file` without blocking.
pub fn try_lock_exclusive(file: File) -> io::Result<TryLock> {
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(TryLock::Acquired(file)),
        Err(Errno::WOULDBLOCK) => Ok(TryLock::HeldByOther),
        Err(e) => Err(e.into()),
    }
}

/// Opens (creating, mode 0600) a file used only for its lock; never through a link.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    open_private(path)
}

/// True while `pid` runs and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z')
}

/// The daemon's pid lock; the lock lasts as long as this value.
///
/// Invariant: the file at `path` is removed only while it is still the inode this value
/// locked, so a lock that lost its path (deleted by hand, then taken by another daemon)
/// never removes the other daemon's file.
pub struct PidLock {
    file: File,
    path: PathBuf,
}

impl PidLock {
    /// Takes the lock and writes our pid, start time and `socket`. `Ok(None)`: another
    /// daemon holds it.
    pub fn acquire(path: &Path, socket: &Path) -> io::Result<Option<PidLock>> {
        let file = open_lock_file(path)?;
        let file = match try_lock_exclusive(file)? {
            TryLock::Acquired(f) => f,
            TryLock::HeldByOther => return Ok(None),
        };
        write_record(&file, socket)?;
        Ok(Some(PidLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// Puts a fresh, locked pid file at `path`, where there is none: the record is written
    /// and locked in a private temporary file that is then hard-linked into place, so the
    /// file never appears there unlocked or empty. `Ok(None)`: a file appeared meanwhile.
    pub fn create_at(path: &Path, socket: &Path) -> io::Result<Option<PidLock>> {
        let (file, staged) = stage(path, socket)?;
        let linked = fs::hard_link(&staged, path);
        let _ = fs::remove_file(&staged);
        match linked {
            Ok(()) => Ok(Some(PidLock {
                file,
                path: path.to_path_buf(),
            })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces this daemon's record with one naming `socket`, atomically: a locked copy
    /// is renamed over the file this lock holds (readers see the old or the new record,
    /// both locked by us). Only while [`Self::holds_path`].
    pub(crate) fn rewrite(&mut self, socket: &Path) -> io::Result<()> {
        if !self.holds_path() {
            return Err(io::Error::other(format!(
                "{} is not this daemon's pid file any more",
                self.path.display()
            )));
        }
        let (file, staged) = stage(&self.path, socket)?;
        if let Err(e) = fs::rename(&staged, &self.path) {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
        // The old inode has no name any more; dropping its descriptor unlocks it.
        self.file = file;
        Ok(())
    }

    /// True while the file at the pid path is the one this lock holds.
    pub fn holds_path(&self) -> bool {
        match (FileId::of_path(&self.path), FileId::of_file(&self.file)) {
            (Ok(Some(at_path)), Ok(mine)) => at_path == mine,
            _ => false,
        }
    }

    /// Removes the pid file (only if it is still ours) and then releases the lock.
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        if self.holds_path() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A locked private copy of this process's record naming `socket`, beside `path`
/// (removed again on failure). The caller links or renames it into place.
fn stage(path: &Path, socket: &Path) -> io::Result<(File, PathBuf)> {
    let staged = path.with_extension(format!("new.{}", std::process::id()));
    let _ = fs::remove_file(&staged);
    let result = create_private(&staged).and_then(|file| match try_lock_exclusive(file)? {
        TryLock::Acquired(file) => write_record(&file, socket).map(|()| file),
        TryLock::HeldByOther => Err(io::Error::other(format!(
            "{} is locked by another process",
            staged.display()
        ))),
    });
    match result {
        Ok(file) => Ok((file, staged)),
        Err(e) => {
            let _ = fs::remove_file(&staged);
            Err(e)
        }
    }
}

/// Writes `PID START_TICKS` of this process and `socket` into a locked pid file.
fn write_record(mut file: &File, socket: &Path) -> io::Result<()> {
    let me = my_record();
    let mut bytes = format!("{} {}\n", me.pid, me.start_ticks).into_bytes();
    bytes.extend_from_slice(socket.as_os_str().as_bytes());
    bytes.push(b'\n');
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(&bytes)?;
    file.sync_all()
}

/// Identifies a file by device and inode (what a path points at may change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file at `path` (not following a final symlink); `None` when there is none.
    pub fn of_path(path: &Path) -> io::Result<Option<FileId>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(FileId::from_meta(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file behind an open descriptor.
    pub fn of_file(file: &File) -> io::Result<FileId> {
        file.metadata().map(|m| FileId::from_meta(&m))
    }

    fn from_meta(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What a pid file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Reads a pid file's process; `None` when missing, empty or unparsable. A record
/// without a start time reads with `start_ticks` 0, which [`is_same_process`] never trusts.
pub fn read_record(path: &Path) -> Option<PidRecord> {
    let bytes = read_nofollow(path).ok()?;
    let first = bytes.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(first).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start_ticks = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(PidRecord { pid, start_ticks })
}

/// The control socket a pid file records; `None` when missing or not recorded.
pub(crate) fn recorded_socket(path: &Path) -> Option<PathBuf> {
    let bytes = read_nofollow(path).ok()?;
    let start = bytes.iter().position(|&b| b == b'\n')? + 1;
    let rest = bytes[start..]
        .strip_suffix(b"\n")
        .unwrap_or(&bytes[start..]);
    (!rest.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(rest)))
}

/// Whether a pid file's lock is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    Held,
    Free,
    /// No pid file.
    Missing,
    /// The file cannot be opened (permissions): we cannot tell.
    Unknown(String),
}

/// Probes the lock on `path` without taking it for more than an instant.
pub fn lock_state(path: &Path) -> LockState {
    let mut read_only = OpenOptions::new();
    read_only.read(true);
    let file = match open_nofollow(path, read_only) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LockState::Missing,
        Err(e) => return LockState::Unknown(format!("cannot open {}: {e}", path.display())),
    };
    // A shared probe lock, released when `file` closes.
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => LockState::Free,
        Err(Errno::WOULDBLOCK) => LockState::Held,
        Err(e) => LockState::Unknown(format!(
            "cannot lock {}: {}",
            path.display(),
            io::Error::from(e)
        )),
    }
}

/// Whether some process holds the lock on `path` (false when missing or unreadable).
pub fn is_locked(path: &Path) -> bool {
    lock_state(path) == LockState::Held
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')' are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True when `record` still names the process that wrote it (a zombie included). A
/// record without a real start time (0) matches no process: anyone can write "PID 0".
pub fn is_same_process(record: &PidRecord) -> bool {
    record.start_ticks != 0 && proc_start_ticks(record.pid) == Some(record.start_ticks)
}

/// True while the process that wrote `record` runs (not a zombie).
pub fn is_alive(record: &PidRecord) -> bool {
    is_running(record.pid) && is_same_process(record)
}

/// This process as a record.
pub fn my_record() -> PidRecord {
    let pid = std::process::id();
    PidRecord {
        pid,
        start_ticks: proc_start_ticks(pid).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        let lock = PidLock::acquire(&path, Path::new("/s"))
            .unwrap()
            .expect("first lock");
        assert!(is_locked(&path));
        assert!(
            PidLock::acquire(&path, Path::new("/s")).unwrap().is_none(),
            "second lock taken"
        );
        let rec = read_record(&path).unwrap();
        assert_eq!(rec.pid, std::process::id());
        assert!(is_same_process(&rec));
        lock.release();
        assert!(!is_locked(&path));
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_removes_only_its_own_file_and_create_at_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        let sock = Path::new("/s");
        let first = PidLock::acquire(&path, sock).unwrap().expect("first lock");
        fs::remove_file(&path).unwrap();
        assert!(!first.holds_path());
        let second = PidLock::create_at(&path, sock)
            .unwrap()
            .expect("nothing there");
        assert!(second.holds_path() && is_locked(&path));
        assert_eq!(read_record(&path), Some(my_record()));
        assert!(
            PidLock::create_at(&path, sock).unwrap().is_none(),
            "replaced a file"
        );
        drop(first);
        assert!(
            path.exists(),
            "a lock that lost its path removed another's file"
        );
        drop(second);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "staging left");
    }

    #[test]
    fn a_rewritten_record_names_the_new_socket_and_stays_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        let mut lock = PidLock::acquire(&path, Path::new("/run/a b/control.sock"))
            .unwrap()
            .unwrap();
        assert_eq!(
            recorded_socket(&path),
            Some(PathBuf::from("/run/a b/control.sock"))
        );
        lock.rewrite(Path::new("/state/control.sock")).unwrap();
        assert_eq!(
            recorded_socket(&path),
            Some(PathBuf::from("/state/control.sock"))
        );
        assert_eq!(read_record(&path), Some(my_record()));
        assert!(lock.holds_path() && is_locked(&path));
        drop(lock);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "staging left");
    }

    #[test]
    fn a_record_without_a_real_start_time_names_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        for text in [
            format!("{} 0\n", std::process::id()),
            format!("{}\n", std::process::id()),
        ] {
            fs::write(&path, text).unwrap();
            let record = read_record(&path).unwrap();
            assert!(!is_same_process(&record), "{record:?} trusted");
            assert!(!is_alive(&record));
        }
    }

    #[test]
    fn reused_pid_is_not_the_same_process() {
        let me = std::process::id();
        let ticks = proc_start_ticks(me).unwrap();
        assert!(!is_same_process(&PidRecord {
            pid: me,
            start_ticks: ticks + 1
        }));
    }
}
