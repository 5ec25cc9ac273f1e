//! The floors under the latency goals, so a missed goal can be split into what this machine
//! costs and what ours does:
//! - the disk: one durable append (a record-sized `pwrite` into preallocated zeros, then
//!   `fdatasync`, the cheapest durable write the journal can make) at the goal rate, one
//!   message at a time, in a folder on the same file system as the daemon's home: its
//!   wall time per append, and the CPU time the writing thread spends in it (on a virtual
//!   machine a flush to the disk is CPU-costly, and it is the journal thread's part of
//!   the CPU per turn);
//! - the loopback network: a turn's three request/response exchanges (the frame and its
//!   ACK, the model call, the reply) as bare blocking `write` + `read` of 1 KiB each way
//!   with an echo thread, at the goal rate: the CPU the kernel takes for a turn's traffic
//!   and wake-ups with no user code at all (on loopback the sender also pays the
//!   receiver's protocol work, as the daemon does);
//! - a hand-off between threads: a message to a thread asleep on a channel and its answer
//!   back, at the goal rate: the CPU the two wake-ups take and the round trip's wall time
//!   (a turn makes two: the message to the journal thread, its durable answer back to the
//!   async worker, the price of never blocking the async worker on the disk); on a
//!   virtual machine waking a sleeping CPU is not free;
//! - a turn's HTTP requests through the daemon's client crate, in `floor_http.rs`;
//! - the daemon without a disk: the same rate run at the goal rate with the daemon's home
//!   (so its journal) on tmpfs, where `fdatasync` returns at once.
//!
//! An ACK comes only after its message is durable (the hardening issue), and at the goal
//! rate messages arrive 1 ms apart, so nearly each pays a sync of its own: the disk floor
//! is what the disk adds to an ACK, the tmpfs run what the rest of the path costs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::report::{Dist, Report, Spread};
use crate::scenarios::{self, GOAL_RATE};
use crate::stack::Stack;
use crate::Params;

/// Size of one appended record: about a journal Accepted record of a short message.
const RECORD_BYTES: usize = 320;
/// Preallocated file size, as the journal preallocates (real zeros, synced once).
pub const PREALLOCATED: usize = 8 << 20;
/// Where tmpfs is mounted on Linux.
const TMPFS: &str = "/dev/shm";

/// The disk floor: `p.reps` runs of `GOAL_RATE x p.load_secs` appends, each followed by
/// `fdatasync`, paced at the goal rate, in a fresh file under `dir`; the time of each
/// write + sync, in ms.
pub fn disk(dir: &Path, p: &Params, report: &mut Report) -> Result<Option<f64>> {
    let count = (GOAL_RATE as u64 * p.load_secs) as usize;
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let run = timed_appends(&dir.join(format!("floor{rep}.bin")), count)?;
        eprintln!(
            "  disk pass {rep}: write + fdatasync p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {:.3} CPU s/1000",
            run.took.p50, run.took.p99, run.took.max, run.cpu_per_1000
        );
        runs.push(run);
    }
    let (Some(p50), Some(p99), Some(max), Some(cpu)) = (
        Spread::of(runs.iter().map(|r| r.took.p50)),
        Spread::of(runs.iter().map(|r| r.took.p99)),
        Spread::of(runs.iter().map(|r| r.took.max)),
        Spread::of(runs.iter().map(|r| r.cpu_per_1000)),
    ) else {
        return Ok(None);
    };
    // The max matters: at the goal rate a sync that stalls for N ms holds the next N
    // messages' ACKs behind it, so one stall per pass sets a pass's p99.
    report.add(
        "floor.disk",
        format!("floor: one {RECORD_BYTES}-byte append + fdatasync @ {GOAL_RATE}/s, this disk"),
        format!(
            "p50 {} / p99 {} / max {} ms; {} CPU s/1000",
            p50.show(3),
            p99.show(3),
            max.show(1),
            cpu.show(3)
        ),
        "-",
        None,
        json!({"p50_ms": p50.json(), "p99_ms": p99.json(), "max_ms": max.json(),
               "cpu_s_per_1000": cpu.json(), "record_bytes": RECORD_BYTES}),
    );
    Ok(Some(cpu.median))
}

/// Request/response exchanges a turn makes: the frame and its ACK, the model call, the
/// reply (a webhook POST and its answer).
const EXCHANGES_PER_TURN: usize = 3;
/// Bytes each way per exchange: about a stream frame, a model request and a reply.
const EXCHANGE_BYTES: usize = 1024;
/// The echo answers after this long, as a real peer takes a while: the client's `read`
/// then sleeps and is woken, as the daemon's worker is between a turn's events (an
/// instant echo would often answer before the reader slept, and cost less than any real
/// exchange).
pub const ECHO_THINKS: Duration = Duration::from_micros(50);
/// A stuck echo fails the floor instead of hanging it.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The loopback floor: `p.reps` runs of `GOAL_RATE x p.load_secs` turns of
/// [`EXCHANGES_PER_TURN`] blocking exchanges with an echo thread, paced at the goal rate;
/// the client thread's CPU per 1 000 turns (the pacing sleeps excluded), which it returns
/// (the median).
pub fn net(p: &Params, report: &mut Report) -> Result<Option<f64>> {
    let turns = (GOAL_RATE as u64 * p.load_secs) as usize;
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let cpu = timed_exchanges(turns).context("the loopback floor")?;
        eprintln!("  loopback pass {rep}: {cpu:.3} CPU s/1000 turns");
        runs.push(cpu);
    }
    let Some(cpu) = Spread::of(runs) else {
        return Ok(None);
    };
    report.add(
        "floor.net",
        format!(
            "floor: a turn's {EXCHANGES_PER_TURN} loopback exchanges ({EXCHANGE_BYTES} B each way) @ {GOAL_RATE}/s, no user code"
        ),
        format!("{} CPU s/1000", cpu.show(3)),
        "-",
        None,
        json!({"cpu_s_per_1000": cpu.json(), "exchanges_per_turn": EXCHANGES_PER_TURN,
               "bytes_each_way": EXCHANGE_BYTES}),
    );
    Ok(Some(cpu.median))
}

/// Runs `turns` paced turns of exchanges against an echo thread on loopback; the calling
/// thread's CPU time in them, seconds per 1 000 turns.
fn timed_exchanges(turns: usize) -> Result<f64> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        peer.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        let mut buf = [0u8; EXCHANGE_BYTES];
        loop {
            match peer.read_exact(&mut buf) {
                Ok(()) => {
                    std::thread::sleep(ECHO_THINKS);
                    peer.write_all(&buf)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let outcome = (|| {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        let request = [b'q'; EXCHANGE_BYTES];
        let mut answer = [0u8; EXCHANGE_BYTES];
        paced_at_goal_rate(turns, |_| {
            for _ in 0..EXCHANGES_PER_TURN {
                conn.write_all(&request)?;
                conn.read_exact(&mut answer)?;
            }
            Ok(())
        })
    })();
    let echoed = echo
        .join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    let cpu = outcome?;
    echoed.context("the echo thread")?;
    Ok(cpu.as_secs_f64() * 1000.0 / turns as f64)
}

/// Thread hand-offs a turn makes beyond the loopback floor's: the message to the journal
/// thread, and its durable answer back to the async worker.
const HANDOFFS_PER_TURN: usize = 2;

/// The hand-off floor: `p.reps` runs of `GOAL_RATE x p.load_secs` round trips to a thread
/// asleep on a channel, paced at the goal rate: the CPU both threads spend per hand-off,
/// and a round trip's wall time. Returns the CPU of a turn's hand-offs, s per 1 000 turns
/// (the median).
pub fn handoff(p: &Params, report: &mut Report) -> Result<Option<f64>> {
    let count = (GOAL_RATE as u64 * p.load_secs) as usize;
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let run = timed_handoffs(count).context("the hand-off floor")?;
        eprintln!(
            "  hand-off pass {rep}: round trip p50 {:.0} us, p99 {:.0} us; {:.1} us CPU a hand-off",
            run.round_trip_us.p50, run.round_trip_us.p99, run.cpu_us_per_handoff
        );
        runs.push(run);
    }
    let (Some(p50), Some(p99), Some(cpu)) = (
        Spread::of(runs.iter().map(|r| r.round_trip_us.p50)),
        Spread::of(runs.iter().map(|r| r.round_trip_us.p99)),
        Spread::of(runs.iter().map(|r| r.cpu_us_per_handoff)),
    ) else {
        return Ok(None);
    };
    report.add(
        "floor.handoff",
        format!(
            "floor: a hand-off to a sleeping thread and back @ {GOAL_RATE}/s (a turn makes {HANDOFFS_PER_TURN}: to the journal thread and back)"
        ),
        format!(
            "round trip p50 {} / p99 {} us; {} us CPU a hand-off",
            p50.show(0),
            p99.show(0),
            cpu.show(1)
        ),
        "-",
        None,
        json!({"round_trip_p50_us": p50.json(), "round_trip_p99_us": p99.json(),
               "cpu_us_per_handoff": cpu.json(), "handoffs_per_turn": HANDOFFS_PER_TURN}),
    );
    // us per hand-off x hand-offs a turn x 1 000 turns, in seconds.
    Ok(Some(cpu.median * HANDOFFS_PER_TURN as f64 * 1e-3))
}

/// The CPU floors a turn pays at the goal rate, s per 1 000 turns (medians).
pub struct Floors {
    pub disk: Option<f64>,
    pub net: Option<f64>,
    pub handoffs: Option<f64>,
    /// The HTTP client crate's CPU beyond the bare exchanges (see `floor_http.rs`).
    pub http_client: Option<f64>,
}

impl Floors {
    /// One bare exchange's CPU, s per 1 000 (a third of the loopback floor).
    pub fn bare_exchange(net: Option<f64>) -> Option<f64> {
        net.map(|net| net / EXCHANGES_PER_TURN as f64)
    }

    /// Adds their sum against the CPU goal to `report`, when every floor was measured:
    /// a turn of this design on this machine costs at least that before any of its own
    /// code (the WebSocket frame, JSON, the journal record, the log line) runs.
    pub fn report_sum(&self, report: &mut Report) {
        let (Some(disk), Some(net), Some(handoffs), Some(http)) =
            (self.disk, self.net, self.handoffs, self.http_client)
        else {
            return;
        };
        let sum = disk + net + handoffs + http;
        report.add(
            "floor.sum",
            format!("floors a turn pays @ {GOAL_RATE}/s, summed (medians)"),
            format!(
                "{sum:.3} CPU s/1000 = disk {disk:.3} + loopback {net:.3} + hand-offs {handoffs:.3} + HTTP client {http:.3}"
            ),
            "-",
            None,
            json!({"cpu_s_per_1000": sum, "disk": disk, "loopback": net,
                   "handoffs": handoffs, "http_client": http}),
        );
    }
}

/// One run of the hand-off floor.
struct Handoffs {
    /// Wall time from sending to the sleeping thread to its answer arriving, us.
    round_trip_us: Dist,
    /// CPU time (user + system) of both threads per hand-off (two a round trip), us.
    cpu_us_per_handoff: f64,
}

/// Runs `count` paced round trips to a thread that sleeps on a channel between them.
fn timed_handoffs(count: usize) -> Result<Handoffs> {
    let (to_peer, peer_inbox) = std::sync::mpsc::channel::<usize>();
    let (to_caller, caller_inbox) = std::sync::mpsc::channel::<usize>();
    // The peer answers each message and, once the caller hangs up, reports its CPU time.
    let peer = std::thread::spawn(move || -> std::io::Result<Duration> {
        let cpu0 = thread_cpu()?;
        while let Ok(i) = peer_inbox.recv() {
            if to_caller.send(i).is_err() {
                break;
            }
        }
        Ok(thread_cpu()?.saturating_sub(cpu0))
    });
    let mut took = Vec::with_capacity(count);
    let caller_cpu = paced_at_goal_rate(count, |i| {
        let t0 = Instant::now();
        let lost = || std::io::Error::other("the hand-off thread stopped");
        to_peer.send(i).map_err(|_| lost())?;
        caller_inbox
            .recv_timeout(EXCHANGE_TIMEOUT)
            .map_err(|_| lost())?;
        took.push(t0.elapsed().as_secs_f64() * 1e6);
        Ok(())
    });
    drop(to_peer);
    let peer_cpu = peer
        .join()
        .map_err(|_| anyhow::anyhow!("the hand-off thread panicked"))??;
    let caller_cpu = caller_cpu?;
    Ok(Handoffs {
        round_trip_us: Dist::of(took).context("no hand-offs timed")?,
        // Two hand-offs a round trip: there and back.
        cpu_us_per_handoff: (caller_cpu + peer_cpu).as_secs_f64() * 1e6 / (2 * count) as f64,
    })
}

/// One run of the disk floor.
struct Appends {
    /// Wall time of each write + sync, ms.
    took: Dist,
    /// CPU time (user + system) of this thread inside the writes and syncs, seconds per
    /// 1 000 appends: what durability costs the journal's thread per message when every
    /// message pays a sync of its own, comparable with the ramp's CPU per 1 000 turns.
    cpu_per_1000: f64,
}

/// Runs `step(0..count)` paced at the goal rate on this thread; the thread's CPU time
/// inside the steps (the pacing sleeps excluded). Stops at the first error.
pub fn paced_at_goal_rate(
    count: usize,
    mut step: impl FnMut(usize) -> std::io::Result<()>,
) -> std::io::Result<Duration> {
    let spacing = Duration::from_secs(1) / GOAL_RATE;
    let began = Instant::now();
    let mut cpu = Duration::ZERO;
    for i in 0..count {
        if let Some(wait) = (began + spacing * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let cpu0 = thread_cpu()?;
        step(i)?;
        cpu += thread_cpu()?.saturating_sub(cpu0);
    }
    Ok(cpu)
}

/// This thread's CPU time so far (user + system), from `getrusage(RUSAGE_THREAD)`.
pub fn thread_cpu() -> std::io::Result<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_THREAD).map_err(std::io::Error::from)?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

/// A new file at `path` of [`PREALLOCATED`] real zeros, synced, as the journal
/// preallocates its file (appends then overwrite blocks already allocated). Removed again
/// if it cannot be filled.
pub fn preallocated(path: &Path) -> Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let filled = file
        .write_all_at(&vec![0u8; PREALLOCATED], 0)
        .and_then(|()| file.sync_all());
    if let Err(e) = filled {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("preallocating {}", path.display()));
    }
    Ok(file)
}

/// Writes `count` records at the goal rate into a preallocated `path` (removed after),
/// timing each write + `fdatasync` in wall and CPU time (the pacing sleeps excluded).
fn timed_appends(path: &Path, count: usize) -> Result<Appends> {
    let file = preallocated(path)?;
    let outcome = (|| {
        let record = [b'r'; RECORD_BYTES];
        let mut took = Vec::with_capacity(count);
        let cpu = paced_at_goal_rate(count, |i| {
            let at = ((i * RECORD_BYTES) % (PREALLOCATED - RECORD_BYTES)) as u64;
            let t0 = Instant::now();
            file.write_all_at(&record, at)?;
            file.sync_data()?;
            took.push(t0.elapsed().as_secs_f64() * 1000.0);
            Ok(())
        })?;
        Ok::<_, std::io::Error>((took, cpu))
    })();
    let _ = std::fs::remove_file(path);
    let (took, cpu) = outcome.with_context(|| format!("appending to {}", path.display()))?;
    Ok(Appends {
        took: Dist::of(took).context("no appends timed")?,
        cpu_per_1000: cpu.as_secs_f64() * 1000.0 / count as f64,
    })
}

/// Our daemon at the goal rate with its whole home on tmpfs: ACK and overhead p50/p99
/// and CPU per 1 000 turns, median [min-max] over `p.reps` runs. Skipped, and said so,
/// where there is no tmpfs at [`TMPFS`].
pub fn tmpfs(p: &Params, report: &mut Report) -> Result<()> {
    if !Path::new(TMPFS).is_dir() {
        eprintln!("  no {TMPFS}: the tmpfs floor is skipped");
        return Ok(());
    }
    let stack = Stack::start_in(scenarios::fake_config(0, None), Path::new(TMPFS))?;
    let config = stack.write_config(scenarios::wide_limits())?;
    let mut fresh = || scenarios::fresh_daemon(&stack, &config);
    let metrics = stack.metrics_url();
    let runs = scenarios::ramp(
        &stack,
        &mut fresh,
        Some(&metrics),
        "tmpfs",
        &[GOAL_RATE],
        false,
        p,
    )?;
    stack.stop_bot()?;
    for f in scenarios::by_rate(&runs) {
        report.add(
            "floor.tmpfs",
            format!(
                "ours with the home on tmpfs (no disk) @ {GOAL_RATE} msg/s: ACK, overhead, CPU"
            ),
            format!(
                "ACK {} / {} ms; overhead {} / {} ms; {} CPU s/1000",
                f.ack_p50.show(2),
                f.ack_p99.show(2),
                Spread::show_or_dash(f.overhead_p50, 2),
                Spread::show_or_dash(f.overhead_p99, 2),
                f.cpu_per_1000.show(3)
            ),
            "-",
            None,
            f.json(),
        );
    }
    Ok(())
}
