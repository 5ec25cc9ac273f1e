//! The durable message journal: a message is on disk before its frame is ACKed (or its
//! HTTP callback answered), and its "answered" mark is recorded right after its reply.
//!
//! Design: one append-only file `STATE/journal/journal.log` of checksummed records
//! ([`record`]: `Accepted{id, msg}`, `Done{id}`), written by one dedicated thread doing
//! group commit ([`writer`]): every request queued while it was busy is appended with one
//! `write` and made durable by one `fdatasync`, so durability costs one sync per batch,
//! off the async workers, and there is no file create, rename or unlink per message;
//! "answered" records need no sync and are written by the caller directly. Chosen over a file per message
//! (the v0.1 inbox: a create, a sync, a rename and a folder sync each) and over an
//! embedded store (a dependency with its own threads and formats for two record kinds).
//!
//! Invariants:
//! - [`Journal::admit`] resolves `New` only after the message's record is synced; the
//!   message then goes to the bot, in arrival order. It resolves `Duplicate` when the id is
//!   pending or answered (pending + the last [`index::DONE_KEEP`] answered ids, rebuilt from
//!   the file at start), and an error when the record could not be made durable;
//! - one process at a time: `journal.lock` in the folder is flocked for the journal's
//!   life ([`lock`]); a second opener fails naming the holder's pid;
//! - at open, the file is streamed (memory holds only live messages); a torn tail (a bad
//!   frame with no valid frame after it) is cut off; corrupt bytes or unknown records in
//!   the middle are skipped, every valid record after them kept, the file copied to
//!   `journal.log.corrupt-<unix ms>` (0600) and rewritten; `*.tmp` leftovers are removed,
//!   the v0.1 inbox is migrated ([`legacy`]) and removed, and the pending messages are
//!   returned for replay: exactly the accepted ones without a Done record;
//! - the file is compacted (rewritten with only live records, synced, renamed, folder
//!   synced) when mostly dead, at start as at run time.
//!
//! The one window left: a crash after DingTalk accepted a reply and before its Done record
//! was written answers that message again after restart. Its length is measured and shown
//! by `daemon status` (`journal.done_window_us_*`).

mod file;
mod index;
mod legacy;
mod lock;
mod record;
mod spare;
mod stats;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dingtalk::Inbound;
use crate::status::JournalReport;
use index::Index;
pub(crate) use index::RecordedReply;
#[cfg(test)]
use record::scan;
use record::{encode, Found, Record, ScanEnd};
use stats::JournalStats;
use writer::{Request, WriterInit, WriterState};

/// Test-only: milliseconds slept before every journal sync (read once at open), to
/// reproduce a slow disk.
pub(crate) const FSYNC_DELAY_ENV: &str = "CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS";

/// How an accepted message ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Durable now, and handed to the bot.
    New,
    /// Already pending or answered: nothing to do.
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("cannot write the message journal {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot open the message journal {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the message journal in {path} is in use by another clawdbot daemon{}; stop it first (`clawdbot daemon stop`)", lock::holder_text(*.holder))]
    InUse { path: PathBuf, holder: Option<u32> },
    #[error("the message journal's writer has stopped")]
    Stopped,
}

impl JournalError {
    fn write(path: &Path, e: std::io::Error) -> JournalError {
        JournalError::Write {
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }

    fn open(path: &Path, e: std::io::Error) -> JournalError {
        JournalError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }
}

/// The handle the bot holds; cheap to share.
pub(crate) struct Journal {
    tx: std::sync::mpsc::Sender<Request>,
    /// For the Done and Sent records the caller writes itself (see [`writer`]).
    state: Arc<WriterState>,
    stats: Arc<JournalStats>,
    /// The journal thread (it holds the journal's lock): joined on drop, so the lock is
    /// free once the handle is gone.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The journal thread ends (after a last sync) once its only sender is gone.
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
    }
}

/// The journal as opened: the handle and what a previous run left unanswered.
pub(crate) struct Opened {
    pub(crate) journal: Journal,
    pub(crate) pending: Vec<Inbound>,
    /// Recorded replies of pending messages, by id: resumed, not answered anew.
    pub(crate) replies: std::collections::HashMap<String, RecordedReply>,
}

impl Journal {
    /// Opens (creating) the journal under `state/journal`, recovers it, migrates the v0.1
    /// inbox, and starts the writer thread. Messages taken later go to `dispatch` once
    /// written, before their sync ends (each with its [`crate::dingtalk::Durable`]).
    pub(crate) fn open(
        state: &Path,
        dispatch: mpsc::UnboundedSender<Inbound>,
    ) -> Result<Opened, JournalError> {
        let sync_delay = std::env::var(FSYNC_DELAY_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        if !sync_delay.is_zero() {
            tracing::warn!(
                ms = sync_delay.as_millis() as u64,
                "{FSYNC_DELAY_ENV} is set: every journal sync is delayed (test hook)"
            );
        }
        Self::open_with(state, dispatch, sync_delay)
    }

    /// [`Journal::open`] with an explicit extra delay before each sync.
    fn open_with(
        state: &Path,
        dispatch: mpsc::UnboundedSender<Inbound>,
        sync_delay: Duration,
    ) -> Result<Opened, JournalError> {
        let dir = state.join("journal");
        prepare_dir(&dir)?;
        let lock = lock::acquire(&dir)?;
        let path = dir.join("journal.log");
        let mut file = file::open_rw(&path).map_err(|e| JournalError::open(&path, e))?;
        let loaded = load(&file, &path)?;
        let mut index = loaded.index;
        let mut messages = loaded.messages;
        let valid = loaded.end.valid_len;
        if loaded.end.torn_tail {
            let size = file
                .metadata()
                .map_err(|e| JournalError::open(&path, e))?
                .len();
            tracing::warn!(
                path = %path.display(), offset = valid, bytes = size - valid,
                "journal ends in a torn record (a write cut by a crash, never ACKed); cutting it off"
            );
            // Made durable by the sync below, before anything is appended or replayed.
            file::zero_fill(&file, valid, size).map_err(|e| JournalError::open(&path, e))?;
        }
        if let Some(first) = loaded.damaged_at {
            keep_damaged_copy(&file, &path, first)?;
        }
        let mut len = valid;
        let old = legacy::read(state);
        if !old.is_empty() {
            len += migrate(&mut file, len, &path, &mut index, &mut messages, &old)?;
            legacy::remove(state, &old);
            tracing::info!(
                messages = old.pending.len(),
                answered = old.done.len(),
                "old inbox migrated into the journal"
            );
        }
        // A daemon killed mid-sync leaves records it wrote but never synced: readable here,
        // from the page cache, but not yet on disk. One sync before any of them is acted
        // on, so no replayed message is answered before it is durable (a power loss after
        // that answer would lose the record, and DingTalk, never ACKed, would deliver the
        // message again: answered twice).
        file::sync_data_after(&file, sync_delay).map_err(|e| JournalError::open(&path, e))?;
        let pending: Vec<Inbound> = index
            .pending_ids()
            .filter_map(|id| messages.remove(id))
            .collect();
        let replies = pending
            .iter()
            .filter_map(|m| Some((m.msg_id.clone(), index.reply_of(&m.msg_id)?.clone())))
            .collect();
        let stats = Arc::new(JournalStats::new(path.clone()));
        stats
            .pending
            .store(index.pending_count(), std::sync::atomic::Ordering::Relaxed);
        let started = writer::start(WriterInit {
            dir,
            path: path.clone(),
            file,
            len,
            index,
            stats: stats.clone(),
            dispatch,
            sync_delay,
            rewrite: loaded.damaged_at.is_some(),
            lock,
        })
        .map_err(|e| JournalError::open(&path, e))?;
        Ok(Opened {
            journal: Journal {
                tx: started.requests,
                state: started.state,
                stats,
                writer: Some(started.thread),
            },
            replies,
            pending,
        })
    }

    /// Queues `msg`; the answer comes once it is durable (or known, or failed).
    pub(crate) fn admit(
        &self,
        msg: Inbound,
    ) -> impl std::future::Future<Output = Result<Admission, JournalError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Request::Accept {
            msg: Box::new(msg),
            reply,
        });
        async move {
            sent.map_err(|_| JournalError::Stopped)?;
            rx.await.map_err(|_| JournalError::Stopped)?
        }
    }

    /// Records that `id` was answered; `replied_at` is when DingTalk accepted the reply.
    /// Never waits for a sync: the record is written here, at once (one small `write`, no
    /// wake-up of the journal thread), or else queued to that thread, which marks the id
    /// done in memory at once and writes (or retries) the record.
    pub(crate) fn done(&self, id: &str, replied_at: Instant) {
        if self.state.write_done(id, replied_at) {
            return;
        }
        let _ = self.tx.send(Request::Done {
            id: id.to_string(),
            replied_at,
        });
    }

    /// Records the reply of `id` (more than one part) before its first part is sent.
    /// Resolves `true` once it is written (it then survives a `kill -9`), `false` when it
    /// could not be (the message is then answered anew after a crash, as before).
    pub(crate) fn reply(
        &self,
        id: &str,
        parts: Vec<String>,
        markdown: bool,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (written, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Reply {
            id: id.to_string(),
            parts,
            markdown,
            written,
        });
        async move { rx.await.unwrap_or(false) }
    }

    /// Records that DingTalk accepted the first `n` parts of `id`'s recorded reply.
    /// Written here like [`Journal::done`], or else queued to the journal thread.
    pub(crate) fn sent(&self, id: &str, n: usize) {
        if self.state.write_sent(id, n) {
            return;
        }
        let _ = self.tx.send(Request::Sent {
            id: id.to_string(),
            n,
        });
    }

    /// Waits until everything queued so far is synced (at shutdown).
    pub(crate) async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Flush(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn report(&self) -> JournalReport {
        self.stats.report()
    }
}

/// The journal as read at open.
struct Loaded {
    index: Index,
    /// The pending messages by id (answered ones are dropped as their Done is read).
    messages: std::collections::HashMap<String, Inbound>,
    end: ScanEnd,
    /// Offset of the first corrupt or unknown record, if any.
    damaged_at: Option<u64>,
}

/// Streams the journal's records into an index; memory holds only live messages, however
/// many dead records the file has.
fn load(file: &std::fs::File, path: &Path) -> Result<Loaded, JournalError> {
    let mut index = Index::default();
    let mut messages = std::collections::HashMap::new();
    let mut damaged_at: Option<u64> = None;
    let end = record::scan_with(file, |found| match found {
        Found::Record(s) => match s.record {
            Record::Accepted { id, msg } => {
                if !index.knows(&id) {
                    let mut encoded = Vec::new();
                    encode(
                        &Record::Accepted {
                            id: id.clone(),
                            msg: msg.clone(),
                        },
                        &mut encoded,
                    );
                    index.add_pending(id.clone(), encoded);
                    messages.insert(id, *msg);
                }
            }
            Record::Done { id } => {
                index.mark_done(&id);
                messages.remove(&id);
            }
            Record::Reply {
                id,
                parts,
                markdown,
            } => index.set_reply(&id, parts, markdown),
            Record::Sent { id, n } => index.set_sent(&id, n),
        },
        Found::Unknown { offset, len } => {
            tracing::warn!(
                path = %path.display(), offset, bytes = len,
                "journal record of an unknown kind (written by a newer version?) skipped"
            );
            damaged_at.get_or_insert(offset);
        }
        Found::Corrupt { offset, len } => {
            tracing::error!(
                path = %path.display(), offset, bytes = len,
                "corrupt bytes in the middle of the journal skipped; every valid record after them is kept"
            );
            damaged_at.get_or_insert(offset);
        }
    })
    .map_err(|e| JournalError::open(path, e))?;
    Ok(Loaded {
        index,
        messages,
        end,
        damaged_at,
    })
}

/// Copies a journal with corrupt or unknown records to `journal.log.corrupt-<unix ms>`
/// (0600, synced) before it is rewritten without them, so nothing is lost for good.
fn keep_damaged_copy(file: &std::fs::File, path: &Path, first: u64) -> Result<(), JournalError> {
    let ms = crate::clock::now_ms();
    let copy = path.with_extension(format!("log.corrupt-{ms}"));
    let copied = (|| -> std::io::Result<()> {
        let mut out = file::create_new(&copy)?;
        let mut from = file.try_clone()?;
        std::io::Seek::seek(&mut from, std::io::SeekFrom::Start(0))?;
        std::io::copy(&mut from, &mut out)?;
        out.sync_all()?;
        file::sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    copied.map_err(|e| JournalError::open(&copy, e))?;
    tracing::error!(
        path = %path.display(), offset = first, copy = %copy.display(),
        "the journal held corrupt or unknown records; a copy was kept and the journal is rewritten without them"
    );
    Ok(())
}

/// Creates the journal folder (0700) if needed, refuses anything but a real folder, and
/// removes `*.tmp` leftovers of an interrupted compaction.
fn prepare_dir(dir: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(JournalError::open(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is {}, not a folder", dir.display(), file::kind_of(&m)),
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| JournalError::open(dir, e))?;
        }
        Err(e) => return Err(JournalError::open(dir, e)),
    }
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::open(dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            tracing::info!(path = %path.display(), "removing an unfinished journal compaction");
            if let Err(e) = std::fs::remove_file(&path) {
                return Err(JournalError::open(&path, e));
            }
        }
    }
    Ok(())
}

/// Appends the old inbox's answered ids and messages to the journal and syncs it.
/// Returns the bytes added.
fn migrate(
    file: &mut std::fs::File,
    at: u64,
    path: &Path,
    index: &mut Index,
    messages: &mut std::collections::HashMap<String, Inbound>,
    old: &legacy::Legacy,
) -> Result<u64, JournalError> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    for id in &old.done {
        if !index.knows(id) {
            index.mark_done(id);
            encode(&Record::Done { id: id.clone() }, &mut buf);
        }
    }
    for msg in &old.pending {
        if index.knows(&msg.msg_id) {
            continue;
        }
        let mut one = Vec::new();
        encode(
            &Record::Accepted {
                id: msg.msg_id.clone(),
                msg: Box::new(msg.clone()),
            },
            &mut one,
        );
        buf.extend_from_slice(&one);
        index.add_pending(msg.msg_id.clone(), one);
        messages.insert(msg.msg_id.clone(), msg.clone());
    }
    file.write_all_at(&buf, at)
        .and_then(|()| file.sync_data())
        .map_err(|e| JournalError::open(path, e))?;
    Ok(buf.len() as u64)
}
