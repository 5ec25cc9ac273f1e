//! The journal's single writer: one dedicated thread doing group commit.
//!
//! It takes every request queued while it was busy, appends their records with one
//! `write`, makes them durable with one `fdatasync`, and only then completes the waiters
//! (whose frames are ACKed) and hands the new messages to the bot, in arrival order. So
//! durability costs one sync per batch, not per message, and never runs on the async
//! workers.
//!
//! Invariants:
//! - the file is always a sequence of whole records: a failed write or sync is cut back
//!   (`set_len`) to the last committed length, and its accepts are refused (not ACKed);
//! - duplicates are decided here, in queue order, against pending + answered ids, and
//!   answered only once the batch they arrived in is durable;
//! - an id marked done stays done in memory even when its Done record cannot be written;
//!   the record is retried with backoff and the error shown in the report;
//! - Done-only batches are written but synced lazily (at the next accept or after
//!   [`LAZY_SYNC`]): a `write` survives `kill -9`; a power loss may lose the last
//!   second of Done records, i.e. answer those messages again.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::file;
use super::index::Index;
use super::record::{encode, Record};
use super::stats::JournalStats;
use super::{Admission, JournalError};
use crate::dingtalk::Inbound;

/// Done records written but not yet synced are synced after this long idle.
const LAZY_SYNC: Duration = Duration::from_secs(1);
/// Most requests taken into one commit.
const MAX_BATCH: usize = 4096;
/// Done records kept for retry after write errors (oldest dropped beyond).
const MAX_DONE_RETRY: usize = super::index::DONE_KEEP;
/// Backoff of Done-record retries.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// Compact when the file is at least this big and mostly dead.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

pub(crate) type AdmitReply = oneshot::Sender<Result<Admission, JournalError>>;

pub(crate) enum Request {
    Accept {
        msg: Box<Inbound>,
        reply: AdmitReply,
    },
    Done {
        id: String,
        /// When DingTalk accepted the reply (start of the crash window).
        replied_at: Instant,
    },
    /// Sync everything written so far, then answer.
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Length of the file made of whole records.
    committed_len: u64,
    index: Index,
    stats: Arc<JournalStats>,
    /// Where messages made durable go (the bot's dispatcher).
    dispatch: mpsc::UnboundedSender<Inbound>,
    /// Test hook (`CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS`): extra delay before each sync.
    sync_delay: Duration,
    /// Written but not yet synced.
    dirty: bool,
    done_retry: Vec<String>,
    retry_delay: Duration,
    retry_at: Option<Instant>,
    /// Compaction is considered once the file is this long.
    compact_at: u64,
}

/// Everything a writer starts from (the journal as recovered at open).
pub(crate) struct WriterInit {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) len: u64,
    pub(crate) index: Index,
    pub(crate) stats: Arc<JournalStats>,
    pub(crate) dispatch: mpsc::UnboundedSender<Inbound>,
    pub(crate) sync_delay: Duration,
}

impl Writer {
    pub(crate) fn new(init: WriterInit) -> Writer {
        Writer {
            dir: init.dir,
            path: init.path,
            file: init.file,
            committed_len: init.len,
            index: init.index,
            stats: init.stats,
            dispatch: init.dispatch,
            sync_delay: init.sync_delay,
            dirty: false,
            done_retry: Vec::new(),
            retry_delay: RETRY_FIRST,
            retry_at: None,
            compact_at: COMPACT_MIN_BYTES.max(init.len.saturating_mul(2)),
        }
    }
}

/// One accept taken into the current batch.
struct Taken {
    msg: Box<Inbound>,
    reply: AdmitReply,
    encoded: Vec<u8>,
}

impl Writer {
    /// Serves requests until every sender is gone, then syncs what is left.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        loop {
            let wait = self.next_wake();
            let first = match wait {
                Some(d) => match rx.recv_timeout(d) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.idle();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        self.retry_done();
        self.sync_if_dirty();
    }

    /// How long to wait for the next request before doing idle work.
    fn next_wake(&self) -> Option<Duration> {
        let lazy = self.dirty.then_some(LAZY_SYNC);
        let retry = self
            .retry_at
            .map(|t| t.saturating_duration_since(Instant::now()));
        match (lazy, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn idle(&mut self) {
        if self.retry_at.is_some_and(|t| t <= Instant::now()) {
            self.retry_done();
        }
        self.sync_if_dirty();
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let mut buf = Vec::new();
        let mut taken: Vec<Taken> = Vec::new();
        let mut duplicates: Vec<AdmitReply> = Vec::new();
        let mut flushes = Vec::new();
        let mut done_now: Vec<(String, Instant)> = Vec::new();
        for req in batch {
            match req {
                Request::Accept { msg, reply } => {
                    let in_batch = taken.iter().any(|t| t.msg.msg_id == msg.msg_id);
                    if in_batch || self.index.knows(&msg.msg_id) {
                        duplicates.push(reply);
                        continue;
                    }
                    let mut encoded = Vec::new();
                    encode(
                        &Record::Accepted {
                            id: msg.msg_id.clone(),
                            msg: (*msg).clone(),
                        },
                        &mut encoded,
                    );
                    buf.extend_from_slice(&encoded);
                    taken.push(Taken {
                        msg,
                        reply,
                        encoded,
                    });
                }
                Request::Done { id, replied_at } => {
                    // Done in memory at once: never answered twice in this run.
                    self.index.mark_done(&id);
                    encode(&Record::Done { id: id.clone() }, &mut buf);
                    done_now.push((id, replied_at));
                }
                Request::Flush(reply) => flushes.push(reply),
            }
        }
        let records = taken.len() + done_now.len();
        let before = self.committed_len;
        let written = if buf.is_empty() {
            Ok(())
        } else {
            self.append(&buf)
        };
        let result = match written {
            Ok(()) => {
                for (_, replied_at) in &done_now {
                    self.stats.record_window(replied_at.elapsed());
                }
                if !taken.is_empty() || !flushes.is_empty() {
                    // A failed sync leaves the written bytes in doubt: cut them off.
                    self.sync().inspect_err(|_| {
                        self.committed_len = before;
                        self.cut_back();
                    })
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.stats
                    .records
                    .fetch_add(records as u64, Ordering::Relaxed);
                if !taken.is_empty() {
                    self.stats.clear_error();
                }
                for t in taken {
                    self.index.add_pending(t.msg.msg_id.clone(), t.encoded);
                    // The dispatcher gone means shutdown: the message replays next start.
                    let _ = self.dispatch.send(*t.msg);
                    let _ = t.reply.send(Ok(Admission::New));
                }
                for d in duplicates {
                    let _ = d.send(Ok(Admission::Duplicate));
                }
            }
            Err(e) => {
                let err = JournalError::write(&self.path, e);
                tracing::error!(error = %err, refused = taken.len(), "journal commit failed: messages not ACKed");
                self.stats.set_error(err.to_string());
                self.stats
                    .failed_accepts
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                for t in taken {
                    let _ = t.reply.send(Err(err.clone()));
                }
                for d in duplicates {
                    let _ = d.send(Err(err.clone()));
                }
                self.queue_retry(done_now.into_iter().map(|(id, _)| id));
            }
        }
        self.retry_done();
        if !flushes.is_empty() {
            self.sync_if_dirty();
            for f in flushes {
                let _ = f.send(());
            }
        }
        self.stats
            .pending
            .store(self.index.pending_count(), Ordering::Relaxed);
        self.maybe_compact();
    }

    /// Appends whole records, or cuts the file back to its last committed length.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(buf) {
            Ok(()) => {
                self.committed_len += buf.len() as u64;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                self.cut_back();
                Err(e)
            }
        }
    }

    fn cut_back(&mut self) {
        if let Err(e) = self.file.set_len(self.committed_len) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot cut a failed journal write back");
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn sync_if_dirty(&mut self) {
        if self.dirty {
            if let Err(e) = self.sync() {
                let err = JournalError::write(&self.path, e);
                tracing::error!(error = %err, "journal sync failed");
                self.stats.set_error(err.to_string());
            }
        }
    }

    fn queue_retry(&mut self, ids: impl Iterator<Item = String>) {
        self.done_retry.extend(ids);
        if self.done_retry.len() > MAX_DONE_RETRY {
            let over = self.done_retry.len() - MAX_DONE_RETRY;
            tracing::error!(
                dropped = over,
                "too many unwritten \"answered\" records; the oldest may be answered again after a restart"
            );
            self.done_retry.drain(..over);
        }
        if !self.done_retry.is_empty() && self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.retry_delay);
        }
        self.stats
            .done_retry_queue
            .store(self.done_retry.len(), Ordering::Relaxed);
    }

    /// Writes Done records that failed before, when their backoff is over.
    fn retry_done(&mut self) {
        if self.done_retry.is_empty() || self.retry_at.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let mut buf = Vec::new();
        for id in &self.done_retry {
            encode(&Record::Done { id: id.clone() }, &mut buf);
        }
        match self.append(&buf) {
            Ok(()) => {
                tracing::info!(
                    count = self.done_retry.len(),
                    "unwritten \"answered\" records written"
                );
                self.done_retry.clear();
                self.retry_delay = RETRY_FIRST;
                self.retry_at = None;
            }
            Err(e) => {
                let err = JournalError::write(&self.path, e);
                tracing::warn!(error = %err, waiting = self.done_retry.len(), "\"answered\" records still cannot be written; retrying");
                self.stats.set_error(err.to_string());
                self.retry_delay = (self.retry_delay * 2).min(RETRY_CAP);
                self.retry_at = Some(Instant::now() + self.retry_delay);
            }
        }
        self.stats
            .done_retry_queue
            .store(self.done_retry.len(), Ordering::Relaxed);
    }

    /// Rewrites the live records into a new file when most of this one is dead:
    /// write a temporary file, sync it, rename it over the journal, sync the folder.
    fn maybe_compact(&mut self) {
        if self.committed_len < self.compact_at
            || (self.index.live_bytes() as u64) * 2 > self.committed_len
            || !self.done_retry.is_empty()
        {
            return;
        }
        let tmp = self.path.with_extension("compact.tmp");
        match self.write_compacted(&tmp) {
            Ok((file, len)) => {
                self.file = file;
                self.committed_len = len;
                self.dirty = false;
                self.compact_at = COMPACT_MIN_BYTES.max(len.saturating_mul(2));
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(bytes = len, "journal compacted");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %tmp.display(), error = %e, "journal compaction failed; keeping the current file");
                // Try again only once the file has grown by as much again.
                self.compact_at = self.committed_len.saturating_mul(2);
            }
        }
    }

    fn write_compacted(&mut self, tmp: &std::path::Path) -> std::io::Result<(File, u64)> {
        let mut buf = Vec::new();
        for id in self.index.done_ids() {
            encode(&Record::Done { id: id.to_string() }, &mut buf);
        }
        for rec in self.index.pending_records() {
            buf.extend_from_slice(rec);
        }
        let mut out = file::create_new(tmp)?;
        out.write_all(&buf)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(tmp, &self.path)?;
        file::sync_dir(&self.dir)?;
        let file = file::open_append(&self.path)?;
        Ok((file, buf.len() as u64))
    }
}
