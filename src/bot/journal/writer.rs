//! The journal's writer: one dedicated thread doing group commit, and direct writes of
//! the records that need no sync.
//!
//! The *journal thread* takes every request queued while it was busy, appends their
//! records with one `write`, hands the new messages to the bot in arrival order, makes
//! them durable with one `fdatasync` when the batch holds accepts (or a duplicate or a
//! flush waiting for one), and only then completes their waiters (whose frames are ACKed)
//! and settles each new message's [`Durable`]: its turn builds its prompt and asks the
//! model while the sync runs, and waits for it before any effect outside the process (a
//! reply, a card, a record of it here), so nothing a turn does is seen before its message
//! is durable, and a message whose sync failed (forgotten, not ACKed, so redelivered) is
//! never answered by its first turn. Requests arriving during a sync form the next batch:
//! an accept arriving mid-sync waits for the next sync, as it would behind any sync. So durability costs one sync per
//! batch, no hand-over between threads, and never runs on the async workers.
//!
//! "Answered" (Done) and "sent" records of pending messages do not go through that
//! thread: the caller appends them itself under the [`WriterState`] lock (one small
//! `write` into preallocated space, no sync), so they are in the file within microseconds
//! even while a slow sync runs, and cost the journal thread no wake-up. A caller finding
//! the lock taken for an append waits for it (microseconds: no sync or wait is ever made
//! under it), so its record is in the file before the call returns; a record queued
//! instead would wait for the thread's next batch, after its sync, in memory only, and a
//! `kill -9` meanwhile would answer that message again. The thread takes them only while
//! it compacts (milliseconds; it is then at work, so the hand-over needs no wake-up), when
//! the id is not pending, or when the direct write failed (it then retries them, see
//! below).
//!
//! Invariants:
//! - the lock on the journal's state is held to stage and write records (and by a
//!   compaction), never across a sync or a wait; a direct writer waits for it only while
//!   no compaction holds it, so an async worker waits at most for one batch's append;
//! - the file is a sequence of whole records followed by zeros: records are written at the
//!   end of the last whole one, into space preallocated with real zeros (so `fdatasync`
//!   has no size or extent change to commit, which on ext4 would wait for a journal
//!   commit, slow when other programs write); a failed write is zeroed again and its
//!   accepts are refused (not ACKed); an accept whose sync failed is refused too and
//!   forgotten before the refusal is sent, so a redelivery is taken again;
//! - duplicates are decided by the journal thread, in queue order, against pending +
//!   answered ids, and answered after the sync that covers the original;
//! - the file keeps room for every pending message's completion records
//!   ([`completion_reserve`]): `allocated_len >= committed_len + reserved`. An accept is
//!   taken only when the file (grown if need be) has room for it plus every reserve, so
//!   Done and Sent records never lack space; a Reply record is written only with room
//!   beyond the reserves;
//! - an id marked done stays done in memory even when its Done record cannot be written;
//!   the record is retried with backoff and the error shown in the report;
//! - compaction runs after a batch's waiters are answered, never on the ACK path, and
//!   into a file zero-filled ahead of time by another thread ([`super::spare`]), so the
//!   accepts queued meanwhile wait for a small write, two syncs and a rename, not for
//!   megabytes of zeros;
//! - Done-only writes are synced lazily (at the next accept's sync, or by the thread
//!   within [`LAZY_SYNC`]: it waits at most that long while anything is pending or
//!   unsynced): a `write` survives `kill -9`; a power loss may lose the last second of
//!   Done records, i.e. answer those messages again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::file;
use super::index::Index;
use super::record::{completion_reserve, encode, encode_accepted, Record};
use super::spare::Spare;
use super::stats::JournalStats;
use super::{Admission, JournalError};
use crate::dingtalk::durable::{Durable, DurableSetter};
use crate::dingtalk::Inbound;

/// Done records written but not yet synced are synced after this long idle.
const LAZY_SYNC: Duration = Duration::from_secs(1);
/// How often a compaction waiting for its spare looks again.
const SPARE_POLL: Duration = Duration::from_millis(5);
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

/// What waits for a sync: answered once the file is synced past it.
enum Waiter {
    /// A new message, already handed to the bot (see [`SyncJob::early`]): its ACK and
    /// its [`Durable`] wait for the sync.
    New {
        id: String,
        reply: AdmitReply,
        durable: DurableSetter,
    },
    Duplicate(AdmitReply),
    Flush(oneshot::Sender<()>),
}

/// The sync a batch owes its waiters: `file` (the current journal file) synced past
/// everything written to it so far.
struct SyncJob {
    file: Arc<File>,
    waiters: Vec<Waiter>,
    /// The batch's new messages, in arrival order, handed to the bot before the sync
    /// starts, each with a [`Durable`] the sync settles: the turn's work up to its first
    /// effect outside the process overlaps the sync (see the module doc).
    early: Vec<Inbound>,
}

/// The journal's state, shared by the journal thread and the callers writing Done and
/// Sent records directly (see the module doc).
pub(crate) struct WriterState {
    core: Mutex<Core>,
    /// Set while the journal thread compacts (it then holds the lock for milliseconds):
    /// direct writers hand their records over instead of waiting.
    compacting: AtomicBool,
}

impl WriterState {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock for a direct write: waited for while it is taken for an append, `None`
    /// while a compaction holds it.
    fn lock_for_direct_write(&self) -> Option<MutexGuard<'_, Core>> {
        if self.compacting.load(Ordering::Acquire) {
            return self.try_lock();
        }
        Some(self.lock())
    }

    /// The lock if it is free.
    fn try_lock(&self) -> Option<MutexGuard<'_, Core>> {
        match self.core.try_lock() {
            Ok(core) => Some(core),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Appends `record` of pending message `id` from the caller's thread unless a
    /// compaction holds the lock; returns the lock, still held, once it is written.
    fn append_direct(&self, id: &str, record: &Record) -> Option<MutexGuard<'_, Core>> {
        let mut core = self.lock_for_direct_write()?;
        if !core.index.is_pending(id) {
            return None;
        }
        let mut buf = Vec::new();
        encode(record, &mut buf);
        core.append(&buf).ok()?;
        Some(core)
    }

    /// Appends pending `id`'s Done record from the caller's thread (no sync: synced lazily
    /// like every Done record). `false` when it was not written here: the caller then
    /// queues it for the journal thread, which marks it done and retries it.
    pub(crate) fn write_done(&self, id: &str, replied_at: Instant) -> bool {
        let record = Record::Done { id: id.to_string() };
        let Some(mut core) = self.append_direct(id, &record) else {
            return false;
        };
        core.index.mark_done(id);
        core.stats.record_window(replied_at.elapsed());
        core.stats.records.fetch_add(1, Ordering::Relaxed);
        core.stats
            .pending
            .store(core.index.pending_count(), Ordering::Relaxed);
        true
    }

    /// Appends pending `id`'s Sent record from the caller's thread; `false` as for
    /// [`WriterState::write_done`].
    pub(crate) fn write_sent(&self, id: &str, n: usize) -> bool {
        let record = Record::Sent {
            id: id.to_string(),
            n,
        };
        let Some(mut core) = self.append_direct(id, &record) else {
            return false;
        };
        core.index.set_sent(id, n);
        true
    }
}

/// The journal file and what is known of it (guarded by [`WriterState`]'s lock).
struct Core {
    dir: PathBuf,
    path: PathBuf,
    file: Arc<File>,
    /// Length of the file made of whole records.
    committed_len: u64,
    /// Length of the file (records, then preallocated zeros).
    allocated_len: u64,
    index: Index,
    stats: Arc<JournalStats>,
    /// Written but maybe not yet synced (Done records are synced lazily).
    dirty: bool,
    done_retry: Vec<String>,
    /// Failed retries in a row: the next waits `capped_doubling(RETRY_FIRST, RETRY_CAP, n)`.
    retry_attempt: u32,
    retry_at: Option<Instant>,
    /// Compaction is considered once the file is this long.
    compact_at: u64,
    /// The next compaction's file, made ahead of time off this thread.
    spare: Spare,
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
    /// The journal's exclusive lock, held as long as the journal thread runs.
    pub(crate) lock: super::lock::JournalLock,
}

/// The running writer: where requests go, the state for direct writes, and the journal
/// thread (it ends once every sender is gone; join it).
pub(crate) struct Started {
    pub(crate) requests: Sender<Request>,
    pub(crate) state: Arc<WriterState>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Starts the journal thread.
///
/// A file that is mostly dead (or holds damaged records) is compacted here, before any
/// request, so a start never keeps carrying a huge dead journal.
pub(crate) fn start(init: WriterInit) -> std::io::Result<Started> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut core = Core {
        dir: init.dir,
        path: init.path.clone(),
        allocated_len: init.file.metadata()?.len().max(init.len),
        file: Arc::new(init.file),
        committed_len: init.len,
        index: init.index,
        stats: init.stats.clone(),
        dirty: false,
        done_retry: Vec::new(),
        retry_attempt: 0,
        retry_at: None,
        compact_at: COMPACT_MIN_BYTES.max(init.len.saturating_mul(2)),
        spare: Spare::beside(&init.path),
    };
    if init.rewrite || core.mostly_dead() {
        core.compact();
    }
    core.preallocate_ahead();
    core.prepare_spare(None);
    let state = Arc::new(WriterState {
        core: Mutex::new(core),
        compacting: AtomicBool::new(false),
    });
    let journal_thread = JournalThread {
        state: state.clone(),
        path: init.path,
        stats: init.stats,
        dispatch: init.dispatch,
        sync_delay: init.sync_delay,
        _lock: init.lock,
    };
    let thread = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || journal_thread.run(rx))?;
    Ok(Started {
        requests: tx,
        state,
        thread,
    })
}

/// The journal thread: batches, syncs, answers, compacts.
struct JournalThread {
    state: Arc<WriterState>,
    path: PathBuf,
    stats: Arc<JournalStats>,
    dispatch: mpsc::UnboundedSender<Inbound>,
    /// Test hook (`CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS`): extra delay before each sync.
    sync_delay: Duration,
    /// Held, never read: no other process opens this journal while the thread runs.
    _lock: super::lock::JournalLock,
}

impl JournalThread {
    /// Serves requests until every sender is gone, then writes and syncs what is left.
    fn run(self, rx: Receiver<Request>) {
        let mut wait = self.state.lock().next_wake();
        loop {
            let first = match wait {
                Some(d) => match rx.recv_timeout(d) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        wait = self.idle();
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
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            wait = self.serve(batch);
        }
        let job = {
            let mut core = self.state.lock();
            core.spare.close();
            core.retry_at = None;
            core.retry_done();
            core.take_dirty()
        };
        if let Some(file) = job {
            self.sync_lazy(&file);
        }
    }

    /// One batch: written (one append), synced if anything waits for it, answered; then
    /// the file compacted if due. Returns how long the next wait may be.
    fn serve(&self, batch: Vec<Request>) -> Option<Duration> {
        let job = self.state.lock().append_batch(batch);
        let synced = job.map(|job| {
            for msg in job.early {
                // The dispatcher gone means shutdown: the message replays next start.
                let _ = self.dispatch.send(msg);
            }
            (self.sync(&job.file), job.waiters)
        });
        let (compact, wait) = {
            let mut core = self.state.lock();
            if let Some((Err(_), waiters)) = &synced {
                // Forgotten before the refusal goes out, so a redelivery is taken again.
                core.dirty = true;
                for w in waiters {
                    if let Waiter::New { id, .. } = w {
                        core.index.forget_pending(id);
                    }
                }
            }
            core.retry_done();
            core.stats
                .pending
                .store(core.index.pending_count(), Ordering::Relaxed);
            (core.compaction_due(), core.next_wake())
        };
        // Answered without the lock: the callers' direct writes right after find it free.
        match synced {
            Some((Ok(()), waiters)) => self.answer(waiters),
            Some((Err(err), waiters)) => self.refuse(waiters, err),
            None => {}
        }
        if compact {
            return self.compact();
        }
        wait
    }

    /// Nothing came for a while: retries unwritten Done records, syncs lazily written
    /// ones, compacts if due.
    fn idle(&self) -> Option<Duration> {
        let (job, compact) = {
            let mut core = self.state.lock();
            core.retry_done();
            (core.take_dirty(), core.compaction_due())
        };
        if let Some(file) = job {
            self.sync_lazy(&file);
        }
        if compact {
            return self.compact();
        }
        self.state.lock().next_wake()
    }

    /// Compacts (direct writers queue their records meanwhile); returns the next wait.
    fn compact(&self) -> Option<Duration> {
        self.state.compacting.store(true, Ordering::Release);
        let wait = {
            let mut core = self.state.lock();
            core.compact();
            core.next_wake()
        };
        self.state.compacting.store(false, Ordering::Release);
        wait
    }

    /// One `fdatasync` of `file` (the lock is not held: direct writes go on meanwhile).
    fn sync(&self, file: &File) -> Result<(), JournalError> {
        let started = Instant::now();
        let synced = file::sync_data_after(file, self.sync_delay);
        crate::ops::metrics::observed().inbox_synced(started.elapsed());
        let result = synced
            .and_then(|()| still_linked(file))
            .map_err(|e| JournalError::write(&self.path, e));
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        if result.is_ok() && self.stats.done_retry_queue.load(Ordering::Relaxed) == 0 {
            self.stats.clear_error();
        }
        result
    }

    /// Syncs lazily written records; on failure the file stays dirty (tried again later).
    fn sync_lazy(&self, file: &File) {
        if let Err(err) = self.sync(file) {
            tracing::error!(error = %err, "journal sync failed");
            self.stats.set_error(err.to_string());
            self.state.lock().dirty = true;
        }
    }

    fn answer(&self, waiters: Vec<Waiter>) {
        for w in waiters {
            match w {
                Waiter::New { reply, durable, .. } => {
                    // The ACK's waiter first: woken first, its frame is ACKed before the
                    // async worker goes on with the message's turn (ACK p50 0.62 -> 0.47
                    // ms at 1 000 msg/s, issue 12).
                    let _ = reply.send(Ok(Admission::New));
                    durable.settle(true);
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

    /// The sync failed: new messages (already forgotten) and duplicates are refused.
    fn refuse(&self, waiters: Vec<Waiter>, err: JournalError) {
        tracing::error!(error = %err, "journal sync failed: messages not ACKed");
        self.stats.set_error(err.to_string());
        for w in waiters {
            match w {
                Waiter::New { reply, durable, .. } => {
                    self.stats.failed_accepts.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(err.clone()));
                    // Forgotten above: its turn ends without a reply, and DingTalk's
                    // redelivery is taken as new.
                    durable.settle(false);
                }
                Waiter::Duplicate(reply) => {
                    let _ = reply.send(Err(err.clone()));
                }
                Waiter::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }
}

impl Core {
    /// How long the journal thread may wait for the next request before idle work: at
    /// most [`LAZY_SYNC`] while records may be unsynced (written, or about to be written
    /// directly for a pending message), [`SPARE_POLL`] while a wanted compaction waits
    /// for its spare, until the next retry of Done records.
    fn next_wake(&self) -> Option<Duration> {
        let lazy = if self.compaction_wanted() && self.spare.making() {
            Some(SPARE_POLL)
        } else {
            (self.dirty || self.index.pending_count() > 0).then_some(LAZY_SYNC)
        };
        let retry = self
            .retry_at
            .map(|t| t.saturating_duration_since(Instant::now()));
        match (lazy, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The file to sync if anything written is not synced yet (then counted as synced: a
    /// failed sync marks it dirty again).
    fn take_dirty(&mut self) -> Option<Arc<File>> {
        std::mem::take(&mut self.dirty).then(|| self.file.clone())
    }

    /// Stages every request of `batch`, writes what was staged in one append, settles each
    /// request by the outcome of that write, and returns the sync its waiters need.
    fn append_batch(&mut self, batch: Vec<Request>) -> Option<SyncJob> {
        let mut staged = Staged::default();
        for req in batch {
            self.stage(req, &mut staged);
        }
        let written = if staged.buf.is_empty() {
            Ok(())
        } else {
            self.append(&staged.buf)
        };
        let (waiters, early) = match written {
            Ok(()) => self.settle_written(staged),
            Err(e) => (self.settle_unwritten(staged, e), Vec::new()),
        };
        if waiters.is_empty() {
            return None;
        }
        // Whatever the file holds now is covered by the sync about to run.
        self.dirty = false;
        Some(SyncJob {
            file: self.file.clone(),
            waiters,
            early,
        })
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
        encode_accepted(&msg, &mut encoded);
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

    /// The batch is in the file: the index learns it; returns what waits for its sync,
    /// and the new messages (each with its [`Durable`]) to hand to the bot before it.
    fn settle_written(&mut self, staged: Staged) -> (Vec<Waiter>, Vec<Inbound>) {
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
        let mut early = Vec::with_capacity(fresh.len());
        for (msg, reply, encoded) in fresh {
            self.index.add_pending(msg.msg_id.clone(), encoded);
            let (durable, setter) = Durable::pending();
            new_waiters.push(Waiter::New {
                id: msg.msg_id.clone(),
                reply,
                durable: setter,
            });
            early.push(Inbound { durable, ..*msg });
        }
        for reply in replies {
            self.index.set_reply(&reply.id, reply.parts, reply.markdown);
            let _ = reply.written.send(true);
        }
        for (id, n) in sent {
            self.index.set_sent(&id, n);
        }
        new_waiters.extend(waiters);
        (new_waiters, early)
    }

    /// The write failed: new messages are refused (not ACKed), replies go out unrecorded,
    /// and the "answered" records are queued for a retry. Returns what still waits for a
    /// sync (duplicates and flushes: of what was written before).
    fn settle_unwritten(&mut self, staged: Staged, e: std::io::Error) -> Vec<Waiter> {
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
        self.queue_retry(staged.done.into_iter().map(|(id, _)| id));
        staged.waiters
    }

    /// Writes whole records after the last one, or zeroes what a failed write left.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
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

    /// Whether the file should be compacted now: it is wanted ([`Core::compaction_wanted`])
    /// and its spare is ready (it is made within tens of milliseconds; compacting without
    /// it would hold the ACKs as long), or the file is twice past `compact_at`. Compaction
    /// writes the live records into a new file, syncs it, renames it over the journal and
    /// syncs the folder.
    fn compaction_due(&self) -> bool {
        self.compaction_wanted()
            && (!self.spare.making() || self.committed_len >= self.compact_at.saturating_mul(2))
    }

    /// Long enough since the last compaction, mostly dead, and no Done record waiting
    /// for a retry.
    fn compaction_wanted(&self) -> bool {
        self.committed_len >= self.compact_at && self.mostly_dead() && self.done_retry.is_empty()
    }

    /// At least [`COMPACT_MIN_BYTES`] long and at least half dead.
    fn mostly_dead(&self) -> bool {
        self.committed_len >= COMPACT_MIN_BYTES
            && (self.index.live_bytes() as u64) * 2 <= self.committed_len
    }

    /// Rewrites the live records into a new file (see [`Core::compaction_due`]): the
    /// spare when it is ready and big enough, else a file zero-filled here.
    fn compact(&mut self) {
        let live = self.live_records();
        let len = live.len() as u64;
        let need = len + self.index.reserved() + PREALLOCATE_MIN;
        let switched = match self.spare.take(need) {
            Some((spare, room)) => self.switch_to_spare(spare, room, &live),
            None => self.write_compacted(&live),
        };
        match switched {
            Ok((file, allocated)) => {
                self.allocated_len = allocated;
                let retired = std::mem::replace(&mut self.file, Arc::new(file));
                self.committed_len = len;
                self.dirty = false;
                self.compact_at = COMPACT_MIN_BYTES.max(len.saturating_mul(2));
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(bytes = len, "journal compacted");
                self.prepare_spare(Some(retired));
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "journal compaction failed; keeping the current file");
                // Try again only once the file has grown by as much again.
                self.compact_at = self.committed_len.saturating_mul(2);
            }
        }
    }

    /// The records a compacted file holds: Done ids, pending messages, recorded replies.
    fn live_records(&self) -> Vec<u8> {
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
        buf
    }

    /// The length a compacted file is zero-filled to when it holds `len` bytes of
    /// records: room for the next records, at least the pending messages' completion
    /// reserves.
    fn compacted_room(&self, len: u64) -> u64 {
        // The next compaction is due at `compact_at` (and forced at twice that): room for
        // that much, so the file never grows between compactions, and no more (these
        // zeros are written to disk at every compaction).
        let next_compact_at = COMPACT_MIN_BYTES.max(len.saturating_mul(2));
        let room = next_compact_at.saturating_mul(2) + self.index.reserved();
        room.div_ceil(PREALLOCATE_MIN) * PREALLOCATE_MIN
    }

    /// Has the next compaction's file made off this thread, sized for today's live set;
    /// `retired` (the file just replaced) is closed there too.
    fn prepare_spare(&self, retired: Option<Arc<File>>) {
        let live = self.index.live_bytes() as u64;
        self.spare.prepare(self.compacted_room(live), retired);
    }

    /// Makes `live` the journal: written at the head of the spare (`room` zeroed bytes),
    /// synced, then renamed over the journal. Returns the new file and its length.
    fn switch_to_spare(
        &mut self,
        spare: File,
        room: u64,
        live: &[u8],
    ) -> std::io::Result<(File, u64)> {
        let switched = spare
            .write_all_at(live, 0)
            .and_then(|()| spare.sync_data())
            .and_then(|()| {
                // Checked right before the rename: an object swapped in under the
                // spare's name is never made the journal.
                if !self.spare.still_named(&spare) {
                    return Err(std::io::Error::other(format!(
                        "{} is no longer the spare this daemon made",
                        self.spare.path().display()
                    )));
                }
                self.replace_journal_with(self.spare.path())
            });
        if switched.is_err() {
            let _ = std::fs::remove_file(self.spare.path());
        }
        switched.map(|()| (spare, room))
    }

    /// Makes `live` the journal through a new file zero-filled here.
    fn write_compacted(&mut self, live: &[u8]) -> std::io::Result<(File, u64)> {
        let tmp = self.path.with_extension("compact.tmp");
        let written = self.write_compacted_at(&tmp, live);
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn write_compacted_at(
        &mut self,
        tmp: &std::path::Path,
        live: &[u8],
    ) -> std::io::Result<(File, u64)> {
        let out = file::create_new(tmp)?;
        let len = live.len() as u64;
        let room = self.compacted_room(len);
        let reserved = len + self.index.reserved();
        let allocated = if file::zero_fill(&out, 0, room).is_ok() {
            room
        } else {
            out.set_len(0)?;
            let fallback = reserved.div_ceil(PREALLOCATE_MIN) * PREALLOCATE_MIN;
            file::zero_fill(&out, 0, fallback)?;
            fallback
        };
        out.write_all_at(live, 0)?;
        out.sync_all()?;
        self.replace_journal_with(tmp)?;
        Ok((out, allocated))
    }

    /// Renames the synced file at `from` over the journal, durably. The old file needs no
    /// sync first: the new one holds everything it records (the index's pending
    /// messages, answered ids and replies), synced; its accepts were synced before their
    /// ACKs, so a power loss before the folder sync can only bring back an old file
    /// lacking some lazily synced Done records (those messages answered again, as any
    /// power loss within [`LAZY_SYNC`] may).
    fn replace_journal_with(&self, from: &std::path::Path) -> std::io::Result<()> {
        std::fs::rename(from, &self.path)?;
        file::sync_dir(&self.dir)
    }
}

/// An error when the journal file was deleted while open: records synced into it would
/// be gone at the next start, so nothing it holds may be ACKed (the messages are refused
/// and redelivered; a restart makes a new file). One `fstat` per sync.
fn still_linked(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if file.metadata()?.nlink() == 0 {
        return Err(std::io::Error::other(
            "the journal file was deleted while the daemon runs; restart the daemon to make a new one",
        ));
    }
    Ok(())
}

#[cfg(test)]
impl WriterState {
    /// Takes the lock on another thread (marked as compacting when `compacting`), holds
    /// it for `hold` and releases it; returns once it is held.
    pub(super) fn hold_lock_elsewhere(
        self: &Arc<Self>,
        hold: Duration,
        compacting: bool,
    ) -> std::thread::JoinHandle<()> {
        let (held, is_held) = std::sync::mpsc::channel();
        let state = self.clone();
        let holder = std::thread::spawn(move || {
            state.compacting.store(compacting, Ordering::Release);
            let core = state.lock();
            held.send(()).expect("the test waits");
            std::thread::sleep(hold);
            drop(core);
            state.compacting.store(false, Ordering::Release);
        });
        is_held.recv().expect("the holder took the lock");
        holder
    }
}
