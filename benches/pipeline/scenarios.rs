//! The measured scenarios. Each one is bounded in message count and in time, and adds
//! its figures (with their goals) to the [`Report`].

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig, FakeState};
use serde_json::json;

use crate::load::{self, Outcome, Turn};
use crate::report::{round3, rss_kib, Dist, Report};
use crate::stack::{ms, BotLimits, Stack, StartFigures, BIN, BOT};
use crate::Params;

/// Extra time allowed for replies after the last injection.
const REPLY_GRACE: Duration = Duration::from_secs(30);
/// Queue depth that never refuses a turn in these runs (refusals are reported anyway).
const DEEP_QUEUE: usize = 100_000;

/// The fake model answering after `latency_ms`, with `slots` server-side slots.
pub fn fake_config(latency_ms: u64, slots: Option<usize>) -> FakeConfig {
    FakeConfig {
        default: FakeBehavior {
            latency_ms,
            ..FakeBehavior::default()
        },
        slots,
        ..FakeConfig::default()
    }
}

/// Bot limits for the overhead runs: many slots, so the model is never the bottleneck.
pub fn wide_limits() -> BotLimits {
    BotLimits {
        concurrency: 256,
        max_waiting: DEEP_QUEUE,
    }
}

/// Figure 7: `daemon start` wall time and reported `ready_ms` over `starts` cycles
/// (stopping in between); leaves the daemon running.
pub fn start_to_ready(
    stack: &Stack,
    config: &Path,
    starts: usize,
    report: &mut Report,
) -> Result<()> {
    let mut runs: Vec<StartFigures> = Vec::new();
    for i in 0..starts.max(1) {
        if i > 0 {
            stack.stop_bot()?;
        }
        runs.push(stack.start_bot(config)?);
    }
    let wall = Dist::of(runs.iter().map(|r| r.wall_ms)).ok_or_else(|| anyhow!("no start"))?;
    let ready = Dist::of(runs.iter().map(|r| r.ready_ms)).ok_or_else(|| anyhow!("no start"))?;
    report.add(
        "daemon_start",
        "daemon start: wall / ready_ms (p50)",
        format!(
            "{:.0} ms / {:.0} ms (max {:.0} / {:.0}, n={})",
            wall.p50, ready.p50, wall.max, ready.max, wall.n
        ),
        "< 1000 ms",
        Some(wall.max < 1000.0),
        json!({"wall": wall.json(), "ready_ms": ready.json()}),
    );
    Ok(())
}

/// Figure 5: the daemon's RSS when idle, then after `conversations` distinct
/// conversations were each answered once.
pub fn memory(stack: &Stack, p: &Params, report: &mut Report) -> Result<()> {
    let pid = stack.bot_pid()?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid)?;
    let n = p.conversations;
    let turns = stack.rt.block_on(async {
        let since = load::outbox_seq(&stack.sim).await?;
        let sent =
            load::inject_at_rate(&stack.sim, p.memory_rate, n, |i| format!("cidMem{i}==")).await?;
        load::timelines(&stack.sim, &sent, since, REPLY_GRACE).await
    })?;
    let answered = load::count(&turns, Outcome::Answered);
    if answered < n {
        bail!("memory run: only {answered} of {n} conversations were answered");
    }
    let after = rss_kib(pid)?;
    let mib = |k: u64| k as f64 / 1024.0;
    report.add(
        "rss_idle",
        "daemon RSS idle",
        format!("{:.1} MiB", mib(idle)),
        "< 32 MiB",
        Some(mib(idle) < 32.0),
        json!({"kib": idle, "pid": pid}),
    );
    report.add(
        "rss_conversations",
        format!("daemon RSS after {n} conversations"),
        format!(
            "{:.1} MiB (+{:.1} KiB/conversation)",
            mib(after),
            after.saturating_sub(idle) as f64 / n as f64
        ),
        "< 64 MiB",
        Some(mib(after) < 64.0),
        json!({"kib": after, "conversations": n, "pid": pid}),
    );
    Ok(())
}

/// Figures 1 and 2 at one offered `rate`: ACK latency, and the bot's own time per turn
/// (frame sent -> reply in the outbox, minus the fake model's fixed latency).
pub fn overhead(stack: &Stack, rate: u32, p: &Params, report: &mut Report) -> Result<()> {
    let count = (rate as u64 * p.load_secs) as usize;
    let lanes = p.load_conversations.max(1);
    let turns = stack.rt.block_on(async {
        let since = load::outbox_seq(&stack.sim).await?;
        let sent = load::inject_at_rate(&stack.sim, rate as f64, count, |i| {
            format!("cidLoad{rate}x{}==", i % lanes)
        })
        .await?;
        load::timelines(&stack.sim, &sent, since, REPLY_GRACE).await
    })?;
    let ack = Dist::of(turns.iter().filter_map(Turn::ack_ms))
        .ok_or_else(|| anyhow!("no ACK at {rate} msg/s"))?;
    report.add(
        format!("ack_latency.{rate}"),
        format!("ACK latency p50/p99 @ {rate} msg/s"),
        ack.show(),
        "p99 < 10 ms",
        Some(ack.p99 < 10.0),
        ack.json(),
    );
    let model_ms = p.fast_latency_ms as f64;
    let answered = turns.iter().filter(|t| t.outcome == Outcome::Answered);
    let own = Dist::of(answered.filter_map(Turn::reply_ms).map(|t| t - model_ms))
        .ok_or_else(|| anyhow!("no answered turn at {rate} msg/s"))?;
    let offered = load::rate_per_s(turns.iter().filter_map(|t| t.sent_us)).unwrap_or(0.0);
    let replied = load::rate_per_s(turns.iter().filter_map(|t| t.reply_us)).unwrap_or(0.0);
    let (busy, fallback, missing) = (
        load::count(&turns, Outcome::Busy),
        load::count(&turns, Outcome::Fallback),
        load::count(&turns, Outcome::Missing),
    );
    let goal_ms = if rate <= 100 { 20.0 } else { 50.0 };
    report.add(
        format!("bot_overhead.{rate}"),
        format!("bot overhead/turn p50/p99 @ {rate} msg/s"),
        format!(
            "{} ; achieved {offered:.0} in, {replied:.0} out msg/s; busy {busy}, fallback {fallback}, missing {missing}",
            own.show()
        ),
        format!("p99 < {goal_ms:.0} ms, all answered"),
        Some(own.p99 < goal_ms && own.n == count),
        json!({"overhead": own.json(), "offered_per_s": rate, "achieved_in_per_s": round3(offered),
               "replies_per_s": round3(replied), "messages": count, "conversations": lanes,
               "model_latency_ms": p.fast_latency_ms, "busy": busy, "fallback": fallback, "missing": missing}),
    );
    Ok(())
}

/// Figure 6: wall time of `daemon status --json` (daemon running) and `clawdbot --version`.
pub fn cli(stack: &Stack, runs: usize, report: &mut Report) -> Result<()> {
    let status = time_runs(runs, || {
        stack.command(&["--json", "daemon", "status", "--name", BOT])
    })?;
    report.add(
        "cli_status",
        "CLI `daemon status --json` wall p50/p99",
        status.show(),
        "p50 < 20 ms",
        Some(status.p50 < 20.0),
        status.json(),
    );
    let version = time_runs(runs, || {
        let mut c = Command::new(BIN);
        c.arg("--version");
        c
    })?;
    report.add(
        "cli_version",
        "CLI `--version` wall p50/p99",
        version.show(),
        "p50 < 10 ms",
        Some(version.p50 < 10.0),
        version.json(),
    );
    Ok(())
}

/// Runs `make()` to completion `runs` times; the wall-time distribution (every run must exit 0).
fn time_runs(runs: usize, make: impl Fn() -> Command) -> Result<Dist> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let mut cmd = make();
        let began = Instant::now();
        let out = cmd.output().map_err(|e| anyhow!("running {cmd:?}: {e}"))?;
        samples.push(ms(began.elapsed()));
        if !out.status.success() {
            bail!(
                "{cmd:?} exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Dist::of(samples).ok_or_else(|| anyhow!("no CLI run"))
}

/// Figures 3 and 4: restarts the bot with `p.limit` slots against a fake model with
/// `p.latency_ms` and `p.slots` server slots, floods it from `p.flood_conversations`
/// conversations, and meanwhile asks `p.quiet_messages` questions (one at a time) from a
/// quiet conversation. Utilization is measured over `p.saturation_secs` once every slot
/// is busy.
/// How long a freshly started daemon holds its first replies (the restart-safe send window).
const STARTUP_SEND_WINDOW: Duration = Duration::from_millis(1_050);

pub fn saturation(stack: &Stack, p: &Params, report: &mut Report) -> Result<()> {
    stack.stop_bot()?;
    stack
        .fake
        .state
        .set_config(fake_config(p.latency_ms, Some(p.slots)));
    let config = stack.write_config(BotLimits {
        concurrency: p.limit,
        max_waiting: DEEP_QUEUE,
    })?;
    stack.start_bot(&config)?;
    // A started daemon counts its robot send window as full for its first second (sends of
    // a killed predecessor are not persisted; see src/dingtalk/limiter.rs): replies in that
    // second wait. This figure is about the steady state, so the flood starts after it.
    std::thread::sleep(STARTUP_SEND_WINDOW);
    stack.fake.state.reset_stats();
    let window = Duration::from_secs(p.saturation_secs);
    // Enough work to stay saturated through the window plus two seconds of margin.
    let rounds = (window + Duration::from_secs(2)).as_millis() as u64 / p.latency_ms.max(1) + 1;
    let flood_n = p.limit * rounds as usize;
    let lanes = p.flood_conversations.max(1);
    let fake = stack.fake.state.clone();
    let sim = &stack.sim;
    let (util, flood, quiet) = stack.rt.block_on(async {
        let since = load::outbox_seq(sim).await?;
        let sent =
            load::inject_at_rate(sim, 2000.0, flood_n, |i| format!("cidFlood{}==", i % lanes))
                .await?;
        wait_busy(&fake, p.limit, Duration::from_secs(10)).await?;
        let quiet_task = tokio::spawn(quiet_probe(sim.clone(), p.quiet_messages, since));
        let util = utilization(&fake, p.limit, window).await;
        let quiet_sent = quiet_task
            .await
            .map_err(|e| anyhow!("quiet probe: {e}"))??;
        let grace = Duration::from_millis(p.latency_ms * rounds) + REPLY_GRACE;
        let flood = load::timelines(sim, &sent, since, grace).await?;
        let quiet = load::timelines(sim, &quiet_sent, since, REPLY_GRACE).await?;
        anyhow::Ok((util, flood, quiet))
    })?;
    let stats = stack.fake.state.stats();
    let peak = stack.bot_status()?["models"][0]["peak_in_flight"].as_u64();
    report.add(
        "slot_utilization",
        format!("model slot utilization (N={}, {} ms, {} s)", p.limit, p.latency_ms, p.saturation_secs),
        format!("{:.2}% ; server max in flight {} (bot peak {})", util * 100.0, stats.max_in_flight,
                peak.map_or("?".into(), |x| x.to_string())),
        format!(">= 98%, max in flight <= {}", p.limit),
        Some(util >= 0.98 && stats.max_in_flight <= p.limit),
        json!({"utilization": round3(util), "window_s": p.saturation_secs, "limit": p.limit, "slots": p.slots,
               "latency_ms": p.latency_ms, "server_max_in_flight": stats.max_in_flight, "bot_peak_in_flight": peak,
               "flood_messages": flood_n, "flood_conversations": lanes}),
    );
    add_quiet(report, p, lanes, &quiet, &flood)
}

/// Adds figure 4: the quiet conversation's waits, against the fairness bound.
fn add_quiet(
    report: &mut Report,
    p: &Params,
    lanes: usize,
    quiet: &[Turn],
    flood: &[Turn],
) -> Result<()> {
    let wait = Dist::of(quiet.iter().filter_map(Turn::reply_ms))
        .ok_or_else(|| anyhow!("the quiet conversation got no reply"))?;
    let flood_wait = Dist::of(flood.iter().filter_map(Turn::reply_ms));
    // Round-robin lanes: at most one grant per other waiting lane, then its own turn.
    let bound = (lanes.div_ceil(p.limit.max(1)) as u64 + 1) * p.latency_ms;
    let goal = bound as f64 + 50.0;
    report.add(
        "quiet_wait",
        format!("quiet conversation wait vs {lanes}-conversation flood"),
        format!(
            "p50 {:.0} ms, max {:.0} ms (n={}) ; flood turns p50 {:.0} ms",
            wait.p50,
            wait.max,
            wait.n,
            flood_wait.map_or(f64::NAN, |d| d.p50)
        ),
        format!("max <= {goal:.0} ms ((ceil(F/N)+1) x latency + 50)"),
        Some(wait.max <= goal && wait.n == quiet.len()),
        json!({"quiet": wait.json(), "flood": flood_wait.map(|d| d.json()), "bound_ms": bound,
               "flood_busy": load::count(flood, Outcome::Busy), "flood_missing": load::count(flood, Outcome::Missing)}),
    );
    Ok(())
}

/// Waits until the fake model has `slots` requests busy at once (fails after `timeout`).
async fn wait_busy(fake: &FakeState, slots: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while fake.stats().busy < slots {
        if Instant::now() >= deadline {
            bail!(
                "the fake model never had {slots} busy slots within {timeout:?}: {:?}",
                fake.stats().busy
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Busy slot-time / (`slots` x wall time) over the next `window`.
async fn utilization(fake: &FakeState, slots: usize, window: Duration) -> f64 {
    let (b0, t0) = (fake.stats().busy_slot_us, Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (fake.stats().busy_slot_us, Instant::now());
    let wall_us = t1.duration_since(t0).as_micros() as f64;
    b1.saturating_sub(b0) as f64 / (slots.max(1) as f64 * wall_us)
}

/// Asks `count` questions from a quiet conversation, each after the previous one was
/// answered (at most 10 s each), 100 ms apart; returns them.
async fn quiet_probe(
    sim: clawdbot::sim::client::SimClient,
    count: usize,
    since: u64,
) -> Result<Vec<load::Injected>> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let m = load::inject(&sim, "cidQuiet==", &format!("quiet question {i}")).await?;
        if !load::wait_reply(&sim, &m, since, Duration::from_secs(10)).await? {
            bail!("the quiet conversation's message {i} got no reply within 10 s");
        }
        sent.push(m);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(sent)
}
