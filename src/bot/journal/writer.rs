//! The journal's writer: two dedicated threads doing group commit.
//!
//! The *appender* takes every request queued while it was busy and appends their records
//! with one `write` (so an "answered" record is written within microseconds of its
//! request, never behind a sync). The *syncer* takes every accept written meanwhile, makes
//! them durable with one `fdatasync`, and only then completes their waiters (whose frames
//! are ACKed) and hands the new messages to the bot, in arrival order. So durability costs
//! one sync per batch, not per message, and never runs on the async workers.
//!
//! Invariants:
//! - the file is a sequence of whole records followed by zeros: records are written at the
//!   end of the last whole one, into space preallocated with real zeros (so `fdatasync`
//!   has no size or extent change to commit, which on ext4 would wait for a journal
//!   commit, slow when other programs write); a failed write is zeroed again and its
//!   accepts are refused (not ACKed); an accept whose sync failed is refused too and
//!   forgotten, so a redelivery is taken again;
//! - duplicates are decided by the appender, in queue order, against pending + answered
//!   ids, and answered by the syncer after the sync that covers the original;
//! - the file keeps room for every pending message's completion records
//!   ([`completion_reserve`]): `allocated_len >= committed_len + reserved`. An accept is
//!   taken only when the file (grown if need be) has room for it plus every reserve, so
//!   Done and Sent records never lack space; a Reply record is written only with room
//!   beyond the reserves;
//! - an id marked done stays done in memory even when its Done record cannot be written;
//!   the record is retried with backoff and the error shown in the report;
//! - Done-only batches are written but synced lazily (at the next accept or after
//!   [`LAZY_SYNC`]): a `write` survives `kill -9`; a power loss may lose the last
//!   second of Done records, i.e. answer those messages again.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::file;
use super::index::Index;
use super::record::{completion_reserve, encode, Record};
use super::stats::JournalStats;
use super::{Admission, JournalError};
use crate::dingtalk::Inbound;

/// Done records written but not yet synced are synced after this long idle.
const LAZY_SYNC: Duration = Duration::from_secs(1);
/// Most requests taken into one write.
const MAX_BATCH: usize = 4096;
/// Done records kept for retry after write errors (oldest dropped beyond).
const MAX_DONE_RETRY: usize = super::index::DONE_KEEP;
/// Backoff of Done-record retries.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// The file grows by this much at a time (zeros written ahead of the records): at start
/// and after a compaction (off the ACK path), else when full (about every 10 000 messages).
const PREALLOCATE: u64 = 8 << 20;
/// Growth when a full step does not fit: one page.
const PREALLOCATE_MIN: u64 = 4096;
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
    /// A multi-part reply about to be sent; `written` says whether it is in the file.
    Reply {
        id: String,
        parts: Vec<String>,
        markdown: bool,
        written: oneshot::Sender<bool>,
    },
    /// The first `n` parts of `id`'s recorded reply were accepted by DingTalk.
    Sent { id: String, n: usize },
    /// Sync everything written so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// One batch's records, encoded before the single write that commits them, and the
/// requests to answer once that write's outcome is known.
#[derive(Default)]
struct Staged {
    buf: Vec<u8>,
    /// New messages with their encoded `Accepted` record.
    fresh: Vec<(Box<Inbound>, AdmitReply, Vec<u8>)>,
    waiters: Vec<Waiter>,
    /// "Answered" records, with when DingTalk accepted the reply.
    done: Vec<(String, Instant)>,
    replies: Vec<StagedReply>,
    sent: Vec<(String, usize)>,
    /// Completion records the fresh messages will need (kept free in the file).
    fresh_reserve: u64,
}

/// A reply record waiting for the write (see [`Request::Reply`]).
struct StagedReply {
    id: String,
    parts: Vec<String>,
    markdown: bool,
    written: oneshot::Sender<bool>,
}

/// What waits for the syncer: answered once the file is synced past it.
enum Waiter {
    New {
        msg: Box<Inbound>,
        reply: AdmitReply,
    },
    Duplicate(AdmitReply),
    Flush(oneshot::Sender<()>),
}

/// Waiters written to `file` (the current journal file: compaction replaces it).
struct ToSync {
    file: Arc<File>,
    waiters: Vec<Waiter>,
}

pub(crate) struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: Arc<File>,
    /// Length of the file made of whole records.
    committed_len: u64,
    /// Length of the file (records, then preallocated zeros).
    allocated_len: u64,
    index: Index,
    stats: Arc<JournalStats>,
    to_sync: Sender<ToSync>,
    /// Ids whose sync failed: forgotten so a redelivery is stored again.
    forget: Receiver<Vec<String>>,
    /// Written but maybe not yet synced (Done records are synced lazily).
    dirty: bool,
    done_retry: Vec<String>,
    /// Failed retries in a row: the next waits `capped_doubling(RETRY_FIRST, RETRY_CAP, n)`.
    retry_attempt: u32,
    retry_at: Option<Instant>,
    /// Compaction is considered once the file is this long.
    compact_at: u64,
    /// Held, never read: no other process opens this journal while the appender runs.
    _lock: super::lock::JournalLock,
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
    /// Rewrite the file at once (it held corrupt or unknown records, already copied aside).
    pub(crate) rewrite: bool,
    /// The journal's exclusive lock, held as long as the appender runs.
    pub(crate) lock: super::lock::JournalLock,
}

/// Starts the appender and the syncer threads; requests go to the returned sender. The
/// appender ends once every sender is gone; its handle is returned to join it.
///
/// A file that is mostly dead (or holds damaged records) is compacted here, before any
/// request, so a start never keeps carrying a huge dead journal.
pub(crate) fn start(
    init: WriterInit,
) -> std::io::Result<(Sender<Request>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (to_sync, sync_rx) = std::sync::mpsc::channel();
    let (forget_tx, forget) = std::sync::mpsc::channel();
    let syncer = Syncer {
        path: init.path.clone(),
        stats: init.stats.clone(),
        dispatch: init.dispatch,
        sync_delay: init.sync_delay,
        forget: forget_tx,
    };
    let mut writer = Writer {
        dir: init.dir,
        path: init.path,
        allocated_len: init.file.metadata()?.len().max(init.len),
        file: Arc::new(init.file),
        committed_len: init.len,
        index: init.index,
        stats: init.stats,
        to_sync,
        forget,
        dirty: false,
        done_retry: Vec::new(),
        retry_attempt: 0,
        retry_at: None,
        compact_at: COMPACT_MIN_BYTES.max(init.len.saturating_mul(2)),
        _lock: init.lock,
    };
    if init.rewrite || writer.mostly_dead() {
        writer.compact();
    }
    writer.preallocate_ahead();
    std::thread::Builder::new()
        .name("journal-sync".into())
        .spawn(move || syncer.run(sync_rx))?;
    let appender = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || writer.run(rx))?;
    Ok((tx, appender))
}

impl Writer {
    /// Serves requests until every sender is gone, then syncs what is left.
    fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match self.next_wake() {
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
            self.apply_forgotten();
            self.append_batch(batch);
        }
        self.retry_at = None;
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
        self.retry_done();
        self.sync_if_dirty();
    }

    fn apply_forgotten(&mut self) {
        while let Ok(ids) = self.forget.try_recv() {
            for id in ids {
                self.index.forget_pending(&id);
            }
        }
    }

    /// Stages every request of `batch`, writes what was staged in one append, then
    /// settles each request by the outcome of that write.
    fn append_batch(&mut self, batch: Vec<Request>) {
        let mut staged = Staged::default();
        for req in batch {
            self.stage(req, &mut staged);
        }
        let written = if staged.buf.is_empty() {
            Ok(())
        } else {
            self.append(&staged.buf)
        };
        match written {
            Ok(()) => self.settle_written(staged),
            Err(e) => self.settle_unwritten(staged, e),
        }
        self.retry_done();
        self.stats
            .pending
            .store(self.index.pending_count(), Ordering::Relaxed);
        self.maybe_compact();
    }

    /// Encodes one request into the batch (or answers it at once: a duplicate, a message
    /// without room, a reply for a message no longer pending).
    fn stage(&mut self, req: Request, staged: &mut Staged) {
        match req {
            Request::Accept { msg, reply } => self.stage_accept(msg, reply, staged),
            Request::Done { id, replied_at } => {
                // Done in memory at once: never answered twice in this run.
                self.index.mark_done(&id);
                encode(&Record::Done { id: id.clone() }, &mut staged.buf);
                staged.done.push((id, replied_at));
            }
            Request::Reply {
                id,
                parts,
                markdown,
                written,
            } => self.stage_reply(
                StagedReply {
                    id,
                    parts,
                    markdown,
                    written,
                },
                staged,
            ),
            Request::Sent { id, n } => {
                encode(&Record::Sent { id: id.clone(), n }, &mut staged.buf);
                staged.sent.push((id, n));
            }
            Request::Flush(reply) => staged.waiters.push(Waiter::Flush(reply)),
        }
    }

    /// A new message is taken only when the file has room for it and, beyond it, for
    /// every pending message's completion records, this one's included.
    fn stage_accept(&mut self, msg: Box<Inbound>, reply: AdmitReply, staged: &mut Staged) {
        let in_batch = staged.fresh.iter().any(|(m, _, _)| m.msg_id == msg.msg_id);
        if in_batch || self.index.knows(&msg.msg_id) {
            staged.waiters.push(Waiter::Duplicate(reply));
            return;
        }
        let mut encoded = Vec::new();
        encode(
            &Record::Accepted {
                id: msg.msg_id.clone(),
                msg: msg.clone(),
            },
            &mut encoded,
        );
        let reserve = completion_reserve(&msg.msg_id);
        let need = self.committed_len
            + (staged.buf.len() + encoded.len()) as u64
            + self.index.reserved()
            + staged.fresh_reserve
            + reserve;
        if let Err(e) = self.ensure_room(need) {
            let err = JournalError::write(&self.path, e);
            tracing::error!(error = %err, "no journal space for a message: not ACKed");
            self.stats.set_error(err.to_string());
            self.stats.failed_accepts.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Err(err));
            return;
        }
        staged.fresh_reserve += reserve;
        staged.buf.extend_from_slice(&encoded);
        staged.fresh.push((msg, reply, encoded));
    }

    /// A reply is recorded only for a pending message, and never out of the reserves:
    /// without room it is not recorded (and is sent unrecorded).
    fn stage_reply(&mut self, reply: StagedReply, staged: &mut Staged) {
        let pending = staged.fresh.iter().any(|(m, _, _)| m.msg_id == reply.id)
            || self.index.is_pending(&reply.id);
        if !pending {
            let _ = reply.written.send(false);
            return;
        }
        let mut encoded = Vec::new();
        encode(
            &Record::Reply {
                id: reply.id.clone(),
                parts: reply.parts.clone(),
                markdown: reply.markdown,
            },
            &mut encoded,
        );
        let need = self.committed_len
            + (staged.buf.len() + encoded.len()) as u64
            + self.index.reserved()
            + staged.fresh_reserve;
        if self.ensure_room(need).is_err() {
            tracing::warn!("no journal space to record a reply; sending it unrecorded");
            let _ = reply.written.send(false);
            return;
        }
        staged.buf.extend_from_slice(&encoded);
        staged.replies.push(reply);
    }

    /// The batch is in the file: the index learns it, and the waiters go to the syncer.
    fn settle_written(&mut self, staged: Staged) {
        let Staged {
            fresh,
            waiters,
            done,
            replies,
            sent,
            ..
        } = staged;
        for (_, replied_at) in &done {
            self.stats.record_window(replied_at.elapsed());
        }
        self.stats
            .records
            .fetch_add((fresh.len() + done.len()) as u64, Ordering::Relaxed);
        let mut new_waiters = Vec::with_capacity(fresh.len() + waiters.len());
        for (msg, reply, encoded) in fresh {
            self.index.add_pending(msg.msg_id.clone(), encoded);
            new_waiters.push(Waiter::New { msg, reply });
        }
        for reply in replies {
            self.index.set_reply(&reply.id, reply.parts, reply.markdown);
            let _ = reply.written.send(true);
        }
        for (id, n) in sent {
            self.index.set_sent(&id, n);
        }
        new_waiters.extend(waiters);
        if !new_waiters.is_empty() {
            // The syncer syncs this file; what it covers is no longer dirty.
            self.dirty = false;
            let _ = self.to_sync.send(ToSync {
                file: self.file.clone(),
                waiters: new_waiters,
            });
        }
    }

    /// The write failed: new messages are refused (not ACKed), replies go out unrecorded,
    /// and the "answered" records are queued for a retry.
    fn settle_unwritten(&mut self, staged: Staged, e: std::io::Error) {
        let err = JournalError::write(&self.path, e);
        tracing::error!(error = %err, refused = staged.fresh.len(), "journal write failed: messages not ACKed");
        self.stats.set_error(err.to_string());
        self.stats
            .failed_accepts
            .fetch_add(staged.fresh.len() as u64, Ordering::Relaxed);
        for (_, reply, _) in staged.fresh {
            let _ = reply.send(Err(err.clone()));
        }
        // A reply not recorded is sent as before (a restart would answer it anew).
        for reply in staged.replies {
            let _ = reply.written.send(false);
        }
        // Duplicates and flushes still wait for the sync of what was written before.
        if !staged.waiters.is_empty() {
            let _ = self.to_sync.send(ToSync {
                file: self.file.clone(),
                waiters: staged.waiters,
            });
        }
        self.queue_retry(staged.done.into_iter().map(|(id, _)| id));
    }

    /// Writes whole records after the last one, or zeroes what a failed write left.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.committed_len + buf.len() as u64;
        if end > self.allocated_len {
            self.preallocate(end)?;
        }
        match self.file.write_all_at(buf, self.committed_len) {
            Ok(()) => {
                self.committed_len = end;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                if let Err(z) = file::zero_fill(&self.file, self.committed_len, end) {
                    tracing::error!(path = %self.path.display(), error = %z, "cannot clear a failed journal write");
                }
                Err(e)
            }
        }
    }

    /// Grows the file (if needed) so it is at least `need` bytes long.
    fn ensure_room(&mut self, need: u64) -> std::io::Result<()> {
        if need <= self.allocated_len {
            return Ok(());
        }
        self.preallocate(need)
    }

    /// At start: makes room for the next records ahead of time, synced, so the first
    /// messages' commits do not pay for growing the file. Best effort (a full disk is
    /// handled when a record is written).
    fn preallocate_ahead(&mut self) {
        let want = self.committed_len + self.index.reserved() + PREALLOCATE / 2;
        if self.allocated_len >= want {
            return;
        }
        let grown = self.preallocate(want);
        if let Err(e) = grown.and_then(|()| self.file.sync_all()) {
            tracing::debug!(path = %self.path.display(), error = %e, "journal space not preallocated");
        }
    }

    /// Grows the file with zeros to cover `end`: a whole step when there is room, else one
    /// page more than needed; on failure the file keeps its length.
    fn preallocate(&mut self, end: u64) -> std::io::Result<()> {
        let mut last = None;
        for step in [PREALLOCATE, PREALLOCATE_MIN] {
            let target = end.div_ceil(step) * step;
            match file::zero_fill(&self.file, self.allocated_len, target) {
                Ok(()) => {
                    self.allocated_len = target;
                    return Ok(());
                }
                Err(e) => {
                    let _ = self.file.set_len(self.allocated_len);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("preallocation failed")))
    }

    fn sync_if_dirty(&mut self) {
        if !self.dirty {
            return;
        }
        match self.file.sync_data() {
            Ok(()) => self.dirty = false,
            Err(e) => {
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
            self.retry_at = Some(Instant::now() + self.retry_delay());
        }
        self.stats
            .done_retry_queue
            .store(self.done_retry.len(), Ordering::Relaxed);
    }

    /// The wait before the next retry of unwritten Done records.
    fn retry_delay(&self) -> Duration {
        crate::backoff::capped_doubling(RETRY_FIRST, RETRY_CAP, self.retry_attempt)
    }

    /// Writes Done records that failed before, once their backoff is over.
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
                self.retry_attempt = 0;
                self.retry_at = None;
            }
            Err(e) => {
                let err = JournalError::write(&self.path, e);
                tracing::warn!(error = %err, waiting = self.done_retry.len(), "\"answered\" records still cannot be written; retrying");
                self.stats.set_error(err.to_string());
                self.retry_attempt = self.retry_attempt.saturating_add(1);
                self.retry_at = Some(Instant::now() + self.retry_delay());
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
            || !self.mostly_dead()
            || !self.done_retry.is_empty()
        {
            return;
        }
        self.compact();
    }

    /// At least [`COMPACT_MIN_BYTES`] long and at least half dead.
    fn mostly_dead(&self) -> bool {
        self.committed_len >= COMPACT_MIN_BYTES
            && (self.index.live_bytes() as u64) * 2 <= self.committed_len
    }

    /// Rewrites the live records into a new file (see [`Writer::maybe_compact`]).
    fn compact(&mut self) {
        let tmp = self.path.with_extension("compact.tmp");
        match self.write_compacted(&tmp) {
            Ok((file, len)) => {
                self.allocated_len = file.metadata().map_or(len, |m| m.len());
                self.file = Arc::new(file);
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
        for (id, reply) in self.index.replies() {
            encode(
                &Record::Reply {
                    id: id.to_string(),
                    parts: reply.parts.clone(),
                    markdown: reply.markdown,
                },
                &mut buf,
            );
            if reply.sent > 0 {
                encode(
                    &Record::Sent {
                        id: id.to_string(),
                        n: reply.sent,
                    },
                    &mut buf,
                );
            }
        }
        let mut out = file::create_new(tmp)?;
        out.write_all(&buf)?;
        let len = buf.len() as u64;
        // Room for the next records, so commits after the switch do not grow the file.
        // At least the pending messages' completion reserves, or no compaction.
        let reserved = len + self.index.reserved();
        let room = (reserved + PREALLOCATE / 2).div_ceil(PREALLOCATE) * PREALLOCATE;
        if file::zero_fill(&out, len, room).is_err() {
            out.set_len(len)?;
            file::zero_fill(
                &out,
                len,
                reserved.div_ceil(PREALLOCATE_MIN) * PREALLOCATE_MIN,
            )?;
        }
        out.sync_all()?;
        drop(out);
        // Everything the old file holds must be durable before it is replaced: a waiter
        // still queued at the syncer is then answered by a sync of the old file.
        self.file.sync_data()?;
        std::fs::rename(tmp, &self.path)?;
        file::sync_dir(&self.dir)?;
        let file = file::open_rw(&self.path)?;
        Ok((file, len))
    }
}

/// The syncer: one `fdatasync` per batch of written accepts, then their answers.
struct Syncer {
    path: PathBuf,
    stats: Arc<JournalStats>,
    dispatch: mpsc::UnboundedSender<Inbound>,
    /// Test hook (`CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS`): extra delay before each sync.
    sync_delay: Duration,
    forget: Sender<Vec<String>>,
}

impl Syncer {
    fn run(self, rx: Receiver<ToSync>) {
        while let Ok(first) = rx.recv() {
            let mut batches = vec![first];
            while let Ok(more) = rx.try_recv() {
                batches.push(more);
            }
            if !self.sync_delay.is_zero() {
                std::thread::sleep(self.sync_delay);
            }
            // Usually one file; two right after a compaction.
            let mut result = Ok(());
            let mut synced: Vec<&Arc<File>> = Vec::new();
            for b in &batches {
                if synced.iter().any(|f| Arc::ptr_eq(f, &b.file)) {
                    continue;
                }
                synced.push(&b.file);
                if let Err(e) = b.file.sync_data() {
                    result = Err(JournalError::write(&self.path, e));
                }
            }
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            let waiters = batches.into_iter().flat_map(|b| b.waiters);
            match result {
                Ok(()) => {
                    if self.stats.done_retry_queue.load(Ordering::Relaxed) == 0 {
                        self.stats.clear_error();
                    }
                    self.answer(waiters)
                }
                Err(err) => self.refuse(waiters, err),
            }
        }
    }

    fn answer(&self, waiters: impl Iterator<Item = Waiter>) {
        for w in waiters {
            match w {
                Waiter::New { msg, reply } => {
                    // The dispatcher gone means shutdown: the message replays next start.
                    let _ = self.dispatch.send(*msg);
                    let _ = reply.send(Ok(Admission::New));
                }
                Waiter::Duplicate(reply) => {
                    let _ = reply.send(Ok(Admission::Duplicate));
                }
                Waiter::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn refuse(&self, waiters: impl Iterator<Item = Waiter>, err: JournalError) {
        tracing::error!(error = %err, "journal sync failed: messages not ACKed");
        self.stats.set_error(err.to_string());
        let mut forgotten = Vec::new();
        for w in waiters {
            match w {
                Waiter::New { msg, reply } => {
                    self.stats.failed_accepts.fetch_add(1, Ordering::Relaxed);
                    forgotten.push(msg.msg_id.clone());
                    let _ = reply.send(Err(err.clone()));
                }
                Waiter::Duplicate(reply) => {
                    let _ = reply.send(Err(err.clone()));
                }
                Waiter::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        let _ = self.forget.send(forgotten);
    }
}
