//! The ACK floor: how fast a durable ACK goes on this machine for a thread that does
//! nothing else, against the same simulator at the ramp's rates up to the goal rate.
//!
//! One blocking thread holds a stream connection to the real simulator and does only what
//! an ACK must: read a frame, read it with the daemon's own [`handle_frame`], append the
//! message to a preallocated file on the daemon's disk (`pwrite`) and `fdatasync` it, then
//! write the ACK. Frames already read when a sync starts share it (group commit), and the
//! ACKs of a sync go out in one write. No hand-off to another thread, no runtime, no turn,
//! no replies or model traffic loading the machine meanwhile: the shortest path the
//! hardening issue's rule (an ACK only once the message is durable) allows for a thread
//! that sleeps in `read` between frames. Its ACK times, read on the simulator's clock as the
//! ramp's are, are a floor under ours, not an estimate of them; they are not the least any
//! durable ACK could take (a thread that spins instead of sleeping, or `O_DSYNC` writes,
//! shave a few hundredths of a ms more, at a core's cost).
//!
//! Bounded: the connection, the handshake and every read time out, a batch sharing a sync
//! is capped at [`MAX_BATCH`] frames, and the thread checks its stop flag at least every
//! [`STOP_POLL`] while idle.

use std::fs::File;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clawdbot::dingtalk::frame::handle_frame;
use clawdbot::dingtalk::stream::{open_stream, stream_url};
use clawdbot::dingtalk::wire::{bot_subscriptions, OpenRequest};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::floor::{self, PREALLOCATED};
use crate::load;
use crate::report::{Dist, Report, Spread};
use crate::scenarios::{self, GOAL_RATE};
use crate::stack::{Stack, CLIENT_ID, CLIENT_SECRET};
use crate::Params;

/// The most frames that share one sync: the acker reads on without waiting only this far
/// before it syncs and ACKs.
const MAX_BATCH: usize = 64;
/// The longest the acker waits in a read before it looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Connecting and the WebSocket handshake give up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One pass of the ACK floor.
struct AckRun {
    ack: Dist,
    /// The acker thread's CPU (user + system) per 1 000 messages.
    cpu_per_1000: f64,
    /// Syncs per message: below 1 when frames shared a sync.
    syncs_per_message: f64,
}

/// What the acker thread did, once stopped.
struct Acked {
    cpu: Duration,
    /// Robot messages made durable and ACKed (pings and other frames not counted).
    messages: usize,
    syncs: usize,
}

/// The ACK floor at every rate of the ramp up to the goal rate (the rates where our ACK is
/// compared with the goal and with the reference bot's), and at the goal rate in any case:
/// `p.reps` passes of `rate x p.load_secs` messages each through the minimal acker, against
/// a simulator of its own (no daemon connected to it), its journal file in that stack's home
/// (on the same file system as the daemon's). Adds a `floor.ack.{rate}` row per rate: ACK
/// p50 / p99 / max on the simulator's clock, and the acker's CPU. Returns each rate's
/// ACK p99 over the passes, in ms.
pub fn ack(p: &Params, report: &mut Report) -> Result<Vec<(u32, Spread)>> {
    let stack = Stack::start(scenarios::fake_config(0, None))?;
    let mut rates: Vec<u32> = p.rates.iter().copied().filter(|&r| r < GOAL_RATE).collect();
    rates.sort_unstable();
    rates.dedup();
    rates.push(GOAL_RATE);
    let mut p99s = Vec::new();
    for rate in rates {
        if let Some(p99) = ack_at(&stack, rate, p, report)? {
            p99s.push((rate, p99));
        }
    }
    Ok(p99s)
}

/// The ACK floor at `rate`: `p.reps` passes, one `floor.ack.{rate}` row; the ACK p99s.
fn ack_at(stack: &Stack, rate: u32, p: &Params, report: &mut Report) -> Result<Option<Spread>> {
    let count = (rate as u64 * p.load_secs) as usize;
    let lanes = p.load_conversations.max(1);
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let tag = format!("{rate}r{rep}");
        let run = ack_pass(stack, &tag, rate, count, lanes)
            .with_context(|| format!("ACK floor at {rate} msg/s, pass {rep}"))?;
        eprintln!(
            "  ACK floor {rate} msg/s pass {rep}: ACK p50 {:.3} ms, p99 {:.3} ms, max {:.2} ms (n={}); {:.3} CPU s/1000; {:.2} syncs a message",
            run.ack.p50, run.ack.p99, run.ack.max, run.ack.n, run.cpu_per_1000, run.syncs_per_message
        );
        runs.push(run);
    }
    let (Some(p50), Some(p99), Some(max), Some(cpu), Some(syncs)) = (
        Spread::of(runs.iter().map(|r| r.ack.p50)),
        Spread::of(runs.iter().map(|r| r.ack.p99)),
        Spread::of(runs.iter().map(|r| r.ack.max)),
        Spread::of(runs.iter().map(|r| r.cpu_per_1000)),
        Spread::of(runs.iter().map(|r| r.syncs_per_message)),
    ) else {
        return Ok(None);
    };
    report.add(
        format!("floor.ack.{rate}"),
        format!(
            "floor: a durable ACK alone (read, append + fdatasync, ACK; one thread) @ {rate} msg/s, a simulator of its own, the same disk"
        ),
        format!(
            "ACK p50 {} / p99 {} / max {} ms; {} CPU s/1000",
            p50.show(2),
            p99.show(2),
            max.show(1),
            cpu.show(3)
        ),
        "-",
        None,
        json!({"ack_p50_ms": p50.json(), "ack_p99_ms": p99.json(), "ack_max_ms": max.json(),
               "cpu_s_per_1000": cpu.json(), "syncs_per_message": syncs.json()}),
    );
    Ok(Some(p99))
}

/// One pass: connect the acker, inject `count` messages at `rate` over `lanes`
/// conversations (as the ramp spreads them), wait for their ACKs, stop the acker. `tag`
/// keeps the pass's file and conversations distinct.
fn ack_pass(stack: &Stack, tag: &str, rate: u32, count: usize, lanes: usize) -> Result<AckRun> {
    let ws_url = stack.rt.block_on(open(stack))?;
    let journal = stack.home().join(format!("ackfloor{tag}.bin"));
    let stop = Arc::new(AtomicBool::new(false));
    let acker = {
        let stop = stop.clone();
        let journal = journal.clone();
        std::thread::spawn(move || run_acker(&ws_url, &journal, &stop))
    };
    let measured = (|| {
        stack.wait_live_connections(1)?;
        stack.rt.block_on(async {
            let sent = load::inject_at_rate(&stack.sim, rate as f64, count, |i| {
                format!("cidackfloor{tag}x{}==", i % lanes)
            })
            .await?;
            load::ack_times(&stack.sim, &sent).await
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let acked = acker
        .join()
        .map_err(|_| anyhow!("the acker thread panicked"))?;
    let _ = std::fs::remove_file(&journal);
    // The acker's own failure first: it explains the missing ACKs.
    let acked = acked?;
    let acks = measured?;
    stack.wait_connections(false)?;
    let missing = acks.iter().filter(|a| a.is_none()).count();
    if missing > 0 {
        bail!("{missing} of {count} messages got no ACK");
    }
    Ok(AckRun {
        ack: Dist::of(acks.into_iter().flatten()).context("no ACK timed")?,
        cpu_per_1000: acked.cpu.as_secs_f64() * 1000.0 / acked.messages.max(1) as f64,
        syncs_per_message: acked.syncs as f64 / acked.messages.max(1) as f64,
    })
}

/// `connections/open` at the simulator, as the daemon does it (the same request and URL
/// building): the WebSocket URL with its ticket.
async fn open(stack: &Stack) -> Result<String> {
    let body = OpenRequest {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        subscriptions: bot_subscriptions(),
        ua: "clawdbot-bench-ack-floor".into(),
        local_ip: None,
    };
    let http = reqwest::Client::builder()
        .timeout(CONNECT_TIMEOUT)
        .build()?;
    let open = open_stream(&http, stack.sim_url(), &body).await?;
    Ok(stream_url(&open))
}

/// The acker thread: connects to `ws_url`, then ACKs every frame, a robot message only once
/// it is appended to `journal` and synced, until `stop`; closes the connection.
fn run_acker(ws_url: &str, journal: &Path, stop: &AtomicBool) -> Result<Acked> {
    let file = floor::preallocated(journal)?;
    let (mut ws, raw) = connect(ws_url)?;
    let cpu0 = floor::thread_cpu()?;
    let mut acked = Acked {
        cpu: Duration::ZERO,
        messages: 0,
        syncs: 0,
    };
    let mut batch = Batch::default();
    while !stop.load(Ordering::Relaxed) {
        // Wait for a frame (a read timeout is the time to look at the stop flag) ...
        match next_message(&mut ws)? {
            Some(msg) => batch.append_and_queue_ack(msg, &file)?,
            None => continue,
        }
        // ... then take the frames already here without waiting, to share one sync.
        raw.set_nonblocking(true)?;
        for _ in 1..MAX_BATCH {
            match next_message(&mut ws)? {
                Some(msg) => batch.append_and_queue_ack(msg, &file)?,
                None => break,
            }
        }
        raw.set_nonblocking(false)?;
        if batch.messages > 0 {
            file.sync_data()?;
            acked.syncs += 1;
            acked.messages += batch.messages;
            batch.messages = 0;
        }
        for ack in batch.acks.drain(..) {
            ws.write(Message::text(ack))?;
        }
        ws.flush()?;
    }
    acked.cpu = floor::thread_cpu()?.saturating_sub(cpu0);
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(acked)
}

/// A plain-TCP WebSocket to `ws_url` with TCP_NODELAY, its reads timing out after
/// [`STOP_POLL`]; and the socket itself, to switch reads to non-blocking.
fn connect(ws_url: &str) -> Result<(WebSocket<TcpStream>, TcpStream)> {
    let url = reqwest::Url::parse(ws_url).with_context(|| format!("the stream URL {ws_url}"))?;
    let addr = *url
        .socket_addrs(|| None)?
        .first()
        .ok_or_else(|| anyhow!("the stream URL {ws_url} has no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let raw = tcp.try_clone()?;
    let (ws, _) = tungstenite::client(ws_url, tcp)
        .map_err(|e| anyhow!("WebSocket handshake with the simulator: {e}"))?;
    raw.set_read_timeout(Some(STOP_POLL))?;
    Ok((ws, raw))
}

/// The next message, or None when none is here yet (a read timeout, or nothing to read
/// without blocking); tungstenite keeps a partly read frame for the next call.
fn next_message(ws: &mut WebSocket<TcpStream>) -> Result<Option<Message>> {
    match ws.read() {
        Ok(msg) => Ok(Some(msg)),
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow!("reading the stream: {e}")),
    }
}

/// The frames read since the last sync: where the next record goes, the ACKs to write
/// once the sync is done, and how many robot messages wait for it.
#[derive(Default)]
struct Batch {
    /// The next record's offset in the preallocated file; records wrap around in it.
    at: usize,
    acks: Vec<String>,
    /// Robot messages appended and not yet synced.
    messages: usize,
}

impl Batch {
    /// A robot message is appended (not yet synced) and its ACK queued; any other frame's
    /// ACK (a ping's answer) is queued as it is.
    fn append_and_queue_ack(&mut self, msg: Message, file: &File) -> Result<()> {
        let Message::Text(text) = msg else {
            return Ok(());
        };
        let handled = handle_frame(text.as_str());
        if let Some((_, payload)) = &handled.robot_message {
            let record = serde_json::to_vec(payload)?;
            if self.at + record.len() > PREALLOCATED {
                self.at = 0;
            }
            file.write_all_at(&record, self.at as u64)?;
            self.at += record.len();
            self.messages += 1;
        }
        self.acks.extend(handled.ack);
        Ok(())
    }
}
