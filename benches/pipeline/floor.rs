//! The floors under the latency goals, so a missed goal can be split into what this machine
//! costs and what ours does:
//! - the disk: one durable append (a record-sized `pwrite` into preallocated zeros, then
//!   `fdatasync`, the cheapest durable write the journal can make) at the goal rate, one
//!   message at a time, in a folder on the same file system as the daemon's home;
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
const PREALLOCATED: usize = 8 << 20;
/// Where tmpfs is mounted on Linux.
const TMPFS: &str = "/dev/shm";

/// The disk floor: `p.reps` runs of `GOAL_RATE x p.load_secs` appends, each followed by
/// `fdatasync`, paced at the goal rate, in a fresh file under `dir`; the time of each
/// write + sync, in ms.
pub fn disk(dir: &Path, p: &Params, report: &mut Report) -> Result<()> {
    let count = (GOAL_RATE as u64 * p.load_secs) as usize;
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let d = timed_appends(&dir.join(format!("floor{rep}.bin")), count)?;
        eprintln!(
            "  disk pass {rep}: write + fdatasync p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            d.p50, d.p99, d.max
        );
        runs.push(d);
    }
    let (Some(p50), Some(p99)) = (
        Spread::of(runs.iter().map(|d| d.p50)),
        Spread::of(runs.iter().map(|d| d.p99)),
    ) else {
        return Ok(());
    };
    report.add(
        "floor.disk",
        format!("floor: one {RECORD_BYTES}-byte append + fdatasync @ {GOAL_RATE}/s, this disk"),
        format!("p50 {} / p99 {} ms", p50.show(3), p99.show(3)),
        "-",
        None,
        json!({"p50_ms": p50.json(), "p99_ms": p99.json(), "record_bytes": RECORD_BYTES}),
    );
    Ok(())
}

/// Writes `count` records at the goal rate into a preallocated `path` (removed after),
/// timing each write + `fdatasync`.
fn timed_appends(path: &Path, count: usize) -> Result<Dist> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let outcome = (|| {
        let zeros = vec![0u8; PREALLOCATED];
        file.write_all_at(&zeros, 0)?;
        file.sync_all()?;
        let record = [b'r'; RECORD_BYTES];
        let spacing = Duration::from_secs(1) / GOAL_RATE;
        let began = Instant::now();
        let mut took = Vec::with_capacity(count);
        for i in 0..count {
            if let Some(wait) = (began + spacing * i as u32).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
            let at = ((i * RECORD_BYTES) % (PREALLOCATED - RECORD_BYTES)) as u64;
            let t0 = Instant::now();
            file.write_all_at(&record, at)?;
            file.sync_data()?;
            took.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        Ok::<_, std::io::Error>(took)
    })();
    let _ = std::fs::remove_file(path);
    let took = outcome.with_context(|| format!("appending to {}", path.display()))?;
    Dist::of(took).context("no appends timed")
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
    stack.start_bot(&config)?;
    let pid = stack.bot_pid()?;
    std::thread::sleep(scenarios::STARTUP_SEND_WINDOW);
    let runs = scenarios::ramp(&stack, pid, "tmpfs", &[GOAL_RATE], false, p)?;
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
