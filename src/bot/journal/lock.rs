//! The journal's exclusive lock: one daemon per journal, even when the start lock, pid
//! file and control socket were removed by hand.
//!
//! The lock is an `flock` on `journal.lock` in the journal folder (not on `journal.log`,
//! which compaction replaces by rename: a lock on it would stay on the old inode). The
//! holder writes its pid into the file so a refused opener can name it. The kernel drops
//! the lock when the holder dies, so a `kill -9` never leaves it stale.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::JournalError;

/// Held for the journal's life; dropping it unlocks.
pub(crate) type JournalLock = Flock<std::fs::File>;

/// Takes the journal folder's lock without waiting, or fails naming the folder and the
/// holder's pid (when it wrote one).
pub(crate) fn acquire(dir: &Path) -> Result<JournalLock, JournalError> {
    let path = dir.join("journal.lock");
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).mode(0o600);
    let file =
        crate::fsutil::open_regular(&path, options).map_err(|e| JournalError::open(&path, e))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            return Err(JournalError::InUse {
                path: dir.to_path_buf(),
                holder: read_pid(&mut file),
            })
        }
        Err((_, errno)) => return Err(JournalError::open(&path, errno.into())),
    };
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", std::process::id()));
    written.map_err(|e| JournalError::open(&path, e))?;
    Ok(lock)
}

fn read_pid(file: &mut std::fs::File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// ` (pid N)` when the holder is known, else nothing.
pub(crate) fn holder_text(holder: Option<u32>) -> String {
    holder
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}
