//! The next compaction's file, zero-filled ahead of time by a helper thread.
//!
//! A compaction writes the live records into a new file whose space ahead of them holds
//! real zeros (the writer's invariants: later appends then change no metadata). Writing
//! and syncing those megabytes took about 10 ms on the journal thread, and every message
//! arriving meanwhile waited for it, and its ACK with it: the ACK tail at 1 000 msg/s was
//! this. Now a helper thread makes the next file while the journal runs, in small synced
//! chunks (a concurrent accept's `fdatasync` queues behind at most one chunk), and the
//! compaction only writes the live records at its head, syncs and renames it.
//!
//! Invariants:
//! - the spare lives at `journal.spare` beside the journal; recovery never reads it;
//! - it is made as a new file (whatever that name held is removed first, never opened or
//!   written through: see [`file::create_new`]), and renamed over the journal only while
//!   that name still is the very file made here (same device and inode, one link), so an
//!   object swapped in meanwhile is never made the journal;
//! - a spare is handed out only once wholly zero-filled and synced, to one compaction;
//! - at most one helper runs at a time; a spare is made only while the file system keeps
//!   at least [`FREE_MARGIN`] times its size free, so it never takes the space the
//!   journal's own records need, and a failed one is removed;
//! - after [`Spare::close`] returns, no spare is on disk: a helper still at work stops at
//!   its next chunk, removes its file and is waited for.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::file;

/// Zeros are written and synced this much at a time.
const CHUNK: u64 = 256 * 1024;
/// Pause between chunks, so the helper leaves the disk to the journal's own syncs: the
/// chunks' flushes are spread over tens of milliseconds, and few accepts meet one.
const CHUNK_PAUSE: Duration = Duration::from_millis(10);
/// A spare is made only when at least this many times its size is free.
const FREE_MARGIN: u64 = 4;

enum State {
    Idle,
    Making,
    Ready { file: File, len: u64 },
    Closed,
}

/// The spare file and the helper that makes it.
pub(crate) struct Spare {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    helper: Mutex<Option<JoinHandle<()>>>,
}

impl Spare {
    /// A spare at `journal.spare` beside `journal` (nothing is made until [`Spare::prepare`]).
    pub(crate) fn beside(journal: &Path) -> Spare {
        Spare {
            path: journal.with_extension("spare"),
            state: Arc::new(Mutex::new(State::Idle)),
            helper: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Starts a helper making a spare of `len` bytes, unless one is being made or ready.
    /// The helper first closes `retired` (the file a compaction replaced): the last close
    /// of an unlinked file frees its blocks, about 2 ms for 8 MiB, which the journal
    /// thread would otherwise spend while messages wait.
    pub(crate) fn prepare(&self, len: u64, retired: Option<Arc<File>>) {
        {
            let mut state = self.lock();
            if !matches!(*state, State::Idle) {
                drop(state);
                close_in_background(retired);
                return;
            }
            *state = State::Making;
        }
        let (path, state) = (self.path.clone(), self.state.clone());
        let spawned = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || {
                drop(retired);
                let made = make(&path, len, &state);
                let mut state = lock(&state);
                match (made, &*state) {
                    (Ok(file), State::Making) => *state = State::Ready { file, len },
                    (made, _) => {
                        if let Err(e) = made {
                            tracing::debug!(path = %path.display(), error = %e, "journal spare not made");
                        }
                        let _ = std::fs::remove_file(&path);
                        if matches!(*state, State::Making) {
                            *state = State::Idle;
                        }
                    }
                }
            });
        match spawned {
            Ok(helper) => {
                // The previous helper (if any) has ended: the state was Idle.
                *self.helper.lock().unwrap_or_else(|p| p.into_inner()) = Some(helper);
            }
            Err(_) => *self.lock() = State::Idle,
        }
    }

    /// Whether a helper is still at work (a compaction then waits for it).
    pub(crate) fn making(&self) -> bool {
        matches!(*self.lock(), State::Making)
    }

    /// The ready spare and its length, when it has room for `need` bytes and its name
    /// still names it; otherwise it is dropped (its name removed when it is ours), so the
    /// next [`Spare::prepare`] makes a new one.
    pub(crate) fn take(&self, need: u64) -> Option<(File, u64)> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Idle) {
            State::Ready { file, len } if len >= need && self.still_named(&file) => {
                Some((file, len))
            }
            State::Ready { .. } => {
                let _ = std::fs::remove_file(&self.path);
                None
            }
            other => {
                *state = other;
                None
            }
        }
    }

    /// Whether the spare's name still is `file` (same device and inode, its only link).
    pub(crate) fn still_named(&self, file: &File) -> bool {
        match (std::fs::symlink_metadata(&self.path), file.metadata()) {
            (Ok(named), Ok(ours)) => {
                named.dev() == ours.dev() && named.ino() == ours.ino() && ours.nlink() == 1
            }
            _ => false,
        }
    }

    /// No more spares: a ready one is removed now; a helper at work stops at its next
    /// chunk, removes its file, and is waited for.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            if let State::Ready { .. } = std::mem::replace(&mut *state, State::Closed) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        let helper = self.helper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(helper) = helper {
            let _ = helper.join();
        }
    }
}

/// Closes `file` on a short-lived thread (inline if no thread can be started).
fn close_in_background(file: Option<Arc<File>>) {
    if let Some(file) = file {
        let _ = std::thread::Builder::new()
            .name("journal-close".into())
            .spawn(move || drop(file));
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates `path` anew as `len` bytes of written, synced zeros, chunk by chunk; stops
/// (an error) once the spare is closed.
fn make(path: &Path, len: u64, state: &Mutex<State>) -> std::io::Result<File> {
    let out = file::create_new(path)?;
    let stat = rustix::fs::fstatvfs(&out)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free / FREE_MARGIN < len {
        return Err(std::io::Error::other(format!(
            "only {free} bytes free; a {len}-byte spare needs {FREE_MARGIN} times that"
        )));
    }
    let mut at = 0;
    while at < len {
        if matches!(*lock(state), State::Closed) {
            return Err(std::io::Error::other("the journal closed"));
        }
        let end = len.min(at + CHUNK);
        file::zero_fill(&out, at, end)?;
        out.sync_data()?;
        at = end;
        std::thread::sleep(CHUNK_PAUSE);
    }
    out.sync_all()?;
    Ok(out)
}
