//! The logging worker: records go into a shared bounded buffer, and one thread writes
//! them out a batch at a time, woken at most once per batch.
//!
//! Why not `tracing_appender::non_blocking`: each record is a channel send that wakes its
//! worker (a futex wake for the logging thread, a context switch for the worker), about
//! two per turn; no setting of it batches the wake-ups. Here a record costs a mutex and a
//! `memcpy`, and the worker is woken only:
//! - when the buffer goes from empty to non-empty while the worker is idle;
//! - when the buffer crosses [`Settings::high_water`] during the worker's pause;
//! - when the [`WorkerGuard`] is dropped.
//!
//! Invariants:
//! - records reach the writer whole, in the order they were appended, each with one
//!   `write_all`, and the writer is flushed once per batch ([`super::RotatingFile`] and
//!   the stderr writer turn that into one `write` per batch);
//! - after writing a batch the worker pauses [`Settings::coalesce`] before taking the
//!   next, so under load it wakes about `1 / coalesce` times a second, and a kill -9
//!   loses at most the records of the last pause plus the batch being written;
//! - memory is bounded: the buffer holds at most [`Settings::capacity`] bytes (or one
//!   record, if a single record is bigger); a record that finds it full is dropped and
//!   counted with the log's write errors (`status` shows them), never waited for: a
//!   writer that cannot keep up (a slow disk, a FIFO whose reader stopped) must not stop
//!   the bot, which logs from its async worker;
//! - dropping the [`WorkerGuard`] writes every appended record and joins the worker,
//!   waiting at most [`STOP_WAIT`] for a writer that is stuck; records logged after that
//!   (the last moments of the process) are written at once by the logging thread itself.

use std::io::{self, Write};
use std::mem;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a stop waits for the worker to write what is left (a stuck writer, e.g. a
/// FIFO nobody reads, is then left behind; the process is ending).
const STOP_WAIT: Duration = Duration::from_secs(2);

/// How the worker batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The pause after each written batch. 10 ms: under load about 100 wake-ups a second
    /// instead of one per record (about 2 000 at 1 000 turns a second), while a `tail -F`
    /// sees records within a blink and a kill -9 loses at most 10 ms of records.
    pub(crate) coalesce: Duration,
    /// Bytes held that end the pause early (a burst is written before the buffer fills).
    pub(crate) high_water: usize,
    /// The most bytes held; a record beyond it is dropped and counted.
    pub(crate) capacity: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            coalesce: Duration::from_millis(10),
            high_water: 256 * 1024,
            capacity: 1024 * 1024,
        }
    }
}

/// Records appended and not yet taken by the worker: their bytes back to back, and where
/// each one ends (so a record is never split, see [`super::RotatingFile`]'s rotation).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

struct State {
    pending: Batch,
    /// The worker waits for records (not pausing): the next record must wake it.
    worker_idle: bool,
    /// The high-water wake-up was sent for the current pause.
    high_water_signalled: bool,
    /// Records dropped on a full buffer so far (the tests read it).
    dropped: u64,
    /// Wake-ups sent to the worker by senders so far (at most one per batch, which the
    /// tests check).
    wakeups_sent: u64,
    /// The guard was dropped: the worker writes what is left and stops.
    closing: bool,
    /// The writer, handed back by the stopped worker: later records are written at once.
    stopped_writer: Option<Box<dyn Write + Send>>,
}

struct Shared {
    settings: Settings,
    state: Mutex<State>,
    /// Wakes the worker.
    records_ready: Condvar,
}

impl Shared {
    /// The state, even if a thread panicked while holding it (the buffer stays usable:
    /// every change to it is a single push or swap).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, record: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if !state.closing
            && !state.pending.bytes.is_empty()
            && state.pending.bytes.len() + record.len() > self.settings.capacity
        {
            state.dropped += 1;
            drop(state);
            super::rotate::record_dropped();
            return Ok(());
        }
        if let Some(writer) = state.stopped_writer.as_mut() {
            writer.write_all(record)?;
            return writer.flush();
        }
        state.pending.push(record);
        let wake = if state.worker_idle {
            state.worker_idle = false;
            true
        } else if !state.high_water_signalled
            && state.pending.bytes.len() >= self.settings.high_water
        {
            state.high_water_signalled = true;
            true
        } else {
            false
        };
        if wake {
            state.wakeups_sent += 1;
            // Notified after unlocking, so the worker does not wake into a held lock.
            drop(state);
            self.records_ready.notify_one();
        }
        Ok(())
    }
}

/// The log's writer as the formatter sees it: each `write` call is one record.
#[derive(Clone)]
pub(crate) struct BatchingWriter(Arc<Shared>);

impl Write for &BatchingWriter {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        self.0.append(record)?;
        Ok(record.len())
    }

    /// Records are written by the worker; there is nothing to flush here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchingWriter {
    type Writer = &'a BatchingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Keep it for the life of the program: dropping it writes every appended record and
/// stops the worker.
#[must_use = "dropping the guard stops the logging worker"]
pub(crate) struct WorkerGuard {
    shared: Arc<Shared>,
    /// The worker and the channel it signals when it has stopped.
    worker: Option<(JoinHandle<()>, Receiver<()>)>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.records_ready.notify_one();
        if let Some((worker, stopped)) = self.worker.take() {
            if stopped.recv_timeout(STOP_WAIT).is_ok() {
                let _ = worker.join();
            }
        }
    }
}

/// Starts the worker thread (`log-writer`) writing to `writer`.
pub(crate) fn spawn<W: Write + Send + 'static>(
    writer: W,
    settings: Settings,
) -> io::Result<(BatchingWriter, WorkerGuard)> {
    let shared = Arc::new(Shared {
        settings,
        state: Mutex::new(State {
            pending: Batch::default(),
            worker_idle: false,
            high_water_signalled: false,
            dropped: 0,
            wakeups_sent: 0,
            closing: false,
            stopped_writer: None,
        }),
        records_ready: Condvar::new(),
    });
    let for_worker = shared.clone();
    let (finished, stopped) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            run(&for_worker, writer);
            let _ = finished.send(());
        })?;
    Ok((
        BatchingWriter(shared.clone()),
        WorkerGuard {
            shared,
            worker: Some((worker, stopped)),
        },
    ))
}

/// The worker: take a batch, write it, pause; until the guard is dropped and nothing is
/// left, then hand the writer back for records logged after that.
fn run<W: Write + Send + 'static>(shared: &Shared, mut writer: W) {
    let mut batch = Batch::default();
    loop {
        {
            let mut state = shared.lock();
            while state.pending.ends.is_empty() && !state.closing {
                state.worker_idle = true;
                state = shared
                    .records_ready
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            state.worker_idle = false;
            if state.pending.ends.is_empty() {
                state.stopped_writer = Some(Box::new(writer));
                return;
            }
            mem::swap(&mut state.pending, &mut batch);
            state.high_water_signalled = false;
        }
        // A failed write is counted by the writer itself (see `super::write_errors`);
        // the next records are still tried.
        for record in batch.records() {
            let _ = writer.write_all(record);
        }
        let _ = writer.flush();
        batch.clear();
        pause(shared);
    }
}

/// Waits [`Settings::coalesce`], or less if the buffer reaches the high-water mark or the
/// guard is dropped. Records appended meanwhile do not wake the worker.
fn pause(shared: &Shared) {
    let deadline = Instant::now() + shared.settings.coalesce;
    let mut state = shared.lock();
    while !state.closing && state.pending.bytes.len() < shared.settings.high_water {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        state = shared
            .records_ready
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reached the writer: the bytes of each batch (the bytes written between two
    /// flushes), and whether a record was ever split across `write` calls.
    #[derive(Default)]
    struct Seen {
        batches: Vec<String>,
        open: String,
    }

    /// A writer that keeps what it is given; `gate` (when set) holds every write until
    /// the test opens it, standing in for a slow disk.
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<Mutex<Seen>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        in_write: Arc<(Mutex<usize>, Condvar)>,
    }

    impl Recorder {
        fn closed_gate() -> Recorder {
            let r = Recorder::default();
            *r.gate.0.lock().unwrap() = true;
            r
        }
        fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
        fn batches(&self) -> Vec<String> {
            self.seen.lock().unwrap().batches.clone()
        }
        /// Waits (at most 30 s, only a hang reaches that) for `n` batches.
        fn wait_batches(&self, n: usize) -> Vec<String> {
            for _ in 0..30_000 {
                let b = self.batches();
                if b.len() >= n {
                    return b;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("{n} batches never came: {:?}", self.batches());
        }
        /// Waits (at most 30 s) until a write is held at the gate.
        fn wait_held_write(&self) {
            let (count, cv) = &*self.in_write;
            let held = cv
                .wait_timeout_while(count.lock().unwrap(), Duration::from_secs(30), |c| *c == 0)
                .unwrap();
            assert!(*held.0 > 0, "no write reached the writer");
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            *self.in_write.0.lock().unwrap() += 1;
            self.in_write.1.notify_all();
            let (closed, cv) = &*self.gate;
            drop(cv.wait_while(closed.lock().unwrap(), |c| *c).unwrap());
            self.seen
                .lock()
                .unwrap()
                .open
                .push_str(std::str::from_utf8(buf).unwrap());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let mut seen = self.seen.lock().unwrap();
            let batch = mem::take(&mut seen.open);
            if !batch.is_empty() {
                seen.batches.push(batch);
            }
            Ok(())
        }
    }

    fn settings(coalesce: Duration) -> Settings {
        Settings {
            coalesce,
            high_water: 1000,
            capacity: 2000,
        }
    }

    fn wakeups(w: &BatchingWriter) -> u64 {
        w.0.lock().wakeups_sent
    }

    fn log(w: &BatchingWriter, record: &str) {
        let mut w = w;
        w.write_all(record.as_bytes()).unwrap();
    }

    fn numbered(range: std::ops::Range<usize>) -> String {
        range.map(|i| format!("record {i}\n")).collect()
    }

    /// Records logged while the worker pauses (here an hour: nothing but the guard's drop
    /// ends it) do not wake it: they reach the writer together, in order, as one batch,
    /// when the guard is dropped.
    #[test]
    fn records_logged_during_the_pause_are_written_in_order_as_one_batch_at_drop() {
        let rec = Recorder::default();
        let (w, guard) = spawn(rec.clone(), settings(Duration::from_secs(3600))).unwrap();
        log(&w, "first\n");
        assert_eq!(rec.wait_batches(1), ["first\n"]);
        let before = wakeups(&w);
        for i in 0..50 {
            log(&w, &format!("record {i}\n"));
        }
        assert_eq!(wakeups(&w), before, "a record woke the pausing worker");
        drop(guard);
        assert_eq!(rec.batches(), ["first\n".to_string(), numbered(0..50)]);
    }

    /// The pause ends by itself: a record logged during it is written without another
    /// record, the high-water mark or the guard's drop.
    #[test]
    fn a_record_logged_during_the_pause_is_written_when_the_pause_ends() {
        let rec = Recorder::default();
        let (w, _guard) = spawn(rec.clone(), settings(Duration::from_millis(5))).unwrap();
        log(&w, "first\n");
        rec.wait_batches(1);
        log(&w, "second\n");
        assert_eq!(rec.wait_batches(2), ["first\n", "second\n"]);
    }

    /// A burst past the high-water mark ends the pause early (here an hour long).
    #[test]
    fn the_high_water_mark_ends_the_pause() {
        let rec = Recorder::default();
        let (w, _guard) = spawn(rec.clone(), settings(Duration::from_secs(3600))).unwrap();
        log(&w, "first\n");
        rec.wait_batches(1);
        let before = wakeups(&w);
        // 1540 bytes: past the 1000-byte mark, under the 2000 capacity.
        for i in 0..150 {
            log(&w, &format!("record {i}\n"));
        }
        let batches = rec.wait_batches(2);
        assert_eq!(wakeups(&w), before + 1, "one wake-up at the mark");
        assert!(batches[1].starts_with("record 0\n"), "{batches:?}");
        assert!(
            batches[1].len() >= 1000,
            "written before the mark: {batches:?}"
        );
    }

    /// A writer that cannot keep up (held here; a FIFO nobody reads in life) fills the
    /// buffer: the records that find it full are dropped and counted, the sender never
    /// waits, and the records kept are whole and in order.
    #[test]
    fn a_full_buffer_drops_and_counts_records_instead_of_blocking_the_sender() {
        let rec = Recorder::closed_gate();
        let (w, guard) = spawn(rec.clone(), settings(Duration::from_millis(1))).unwrap();
        log(&w, "first\n");
        rec.wait_held_write();
        // 2000 bytes of 20-byte records fill the buffer exactly while the writer is held.
        let filler: Vec<String> = (0..100).map(|i| format!("fill {i:014}\n")).collect();
        for record in &filler {
            log(&w, record);
        }
        let (errors_before, _) = crate::logging::write_errors();
        // Returns at once although the writer is still held (it would hang here if the
        // sender waited for room).
        for _ in 0..3 {
            log(&w, "overflow\n");
        }
        let (dropped, pending) = {
            let state = w.0.lock();
            (state.dropped, state.pending.bytes.len())
        };
        let (errors_after, last) = crate::logging::write_errors();
        rec.open_gate();
        assert_eq!((dropped, pending), (3, 2000));
        assert!(
            errors_after >= errors_before + 3,
            "{errors_before} -> {errors_after}"
        );
        assert!(last.is_some_and(|l| l.contains("dropped")));
        drop(guard);
        let all: String = rec.batches().concat();
        assert_eq!(all, format!("first\n{}", filler.concat()));
    }

    /// Records logged after the guard is dropped (the process's last moments) are written
    /// at once by the logging thread.
    #[test]
    fn records_logged_after_the_guard_is_dropped_are_written_at_once() {
        let rec = Recorder::default();
        let (w, guard) = spawn(rec.clone(), settings(Duration::from_secs(3600))).unwrap();
        log(&w, "before\n");
        drop(guard);
        log(&w, "after\n");
        assert_eq!(rec.batches(), ["before\n", "after\n"]);
    }

    /// A record bigger than the whole buffer still goes through (alone), never blocks
    /// forever.
    #[test]
    fn a_record_bigger_than_the_buffer_is_written_whole() {
        let rec = Recorder::default();
        let (w, guard) = spawn(rec.clone(), settings(Duration::from_millis(1))).unwrap();
        let big = format!("{}\n", "x".repeat(5000));
        log(&w, &big);
        // Taken by the worker before the next record, which would else find it full.
        rec.wait_batches(1);
        log(&w, "next\n");
        drop(guard);
        assert_eq!(rec.batches().concat(), format!("{big}next\n"));
    }
}
