//! The replicas scenario (issue 14): 1, 2 and 3 bot daemons sharing one Redis
//! (`state.backend: redis`) and ONE model limit (`--limit`), flooded from
//! `--flood-conversations` conversations through the simulator (which pushes each message
//! to one of the live connections at random). Figures per replica count, median [min-max]
//! over `--reps` runs, each on a fresh `redis-server` (Debian's package) on loopback:
//! replies per second over the window, model slot utilization (busy slot-time of the fake
//! model / (limit x wall time)) and the fake model's max in flight, which must never pass
//! the limit whatever the number of replicas.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clawdbot_testkit::redis_server::{self, RedisServer};
use serde_json::json;

use crate::load;
use crate::report::{Report, Spread};
use crate::scenarios::{fake_config, flood_size, DEEP_QUEUE, STARTUP_SEND_WINDOW};
use crate::stack::{BotLimits, Stack};
use crate::Params;

/// Replica counts measured.
const REPLICAS: [usize; 3] = [1, 2, 3];

/// One run's figures.
struct Run {
    replies_per_s: f64,
    utilization: f64,
    max_in_flight: usize,
}

/// Adds one row per replica count; skipped (said in the table) without `redis-server`.
pub fn replicas(stack: &Stack, p: &Params, report: &mut Report) -> Result<()> {
    if !redis_server::available() {
        report.add(
            "replicas",
            "replicas sharing one model limit",
            "skipped: no redis-server (apt-get install redis-server)",
            "-",
            None,
            json!(null),
        );
        return Ok(());
    }
    stack.stop_bot()?;
    stack
        .fake
        .state
        .set_config(fake_config(p.latency_ms, Some(p.slots)));
    for n in REPLICAS {
        let mut runs = Vec::new();
        for rep in 0..p.reps() {
            let run = one_run(stack, p, n, rep)?;
            eprintln!(
                "  {n} replica(s), run {rep}: {:.1} replies/s, utilization {:.2}%, max in flight {}",
                run.replies_per_s,
                run.utilization * 100.0,
                run.max_in_flight
            );
            runs.push(run);
        }
        let rate =
            Spread::of(runs.iter().map(|r| r.replies_per_s)).ok_or_else(|| anyhow!("no run"))?;
        let util = Spread::of(runs.iter().map(|r| r.utilization * 100.0))
            .ok_or_else(|| anyhow!("no run"))?;
        let max = runs.iter().map(|r| r.max_in_flight).max().unwrap_or(0);
        report.add(
            format!("replicas.{n}"),
            format!(
                "{n} replica(s) on Redis, one limit N={}, {} ms model",
                p.limit, p.latency_ms
            ),
            format!(
                "{} replies/s; utilization {} %; model max in flight {max}",
                rate.show(1),
                util.show(2)
            ),
            format!(">= 98%, max in flight <= {}", p.limit),
            Some(util.median >= 98.0 && max <= p.limit),
            json!({"replicas": n, "replies_per_s": rate.json(), "utilization_pct": util.json(),
                   "model_max_in_flight": max, "limit": p.limit, "latency_ms": p.latency_ms,
                   "window_s": p.saturation_secs}),
        );
    }
    Ok(())
}

/// Starts Redis and `n` daemons, floods them, measures over the window, stops them.
fn one_run(stack: &Stack, p: &Params, n: usize, rep: usize) -> Result<Run> {
    let redis = RedisServer::start();
    let state = format!(
        "state:\n  backend: redis\n  redis:\n    url: \"{}\"\n    key_prefix: \"bench{n}x{rep}\"\n",
        redis.url()
    );
    let limits = BotLimits {
        concurrency: p.limit,
        max_waiting: DEEP_QUEUE,
    };
    let config = stack.write_config_as(&format!("replicas{n}.yaml"), limits, &state)?;
    let names: Vec<String> = (0..n).map(|i| format!("rep{n}x{rep}x{i}")).collect();
    let result = (|| {
        for name in &names {
            stack.start_named(name, &config)?;
        }
        stack.wait_live_connections(n)?;
        // Each started daemon holds its first second of sends (see the saturation run).
        std::thread::sleep(STARTUP_SEND_WINDOW);
        flood(stack, p, n, rep)
    })();
    for name in &names {
        stack.stop_named(name);
    }
    drop(redis);
    result
}

/// Floods from `p.flood_conversations` conversations, waits until the model's slots are
/// all busy, then measures replies and busy slot-time over `p.saturation_secs`.
fn flood(stack: &Stack, p: &Params, n: usize, rep: usize) -> Result<Run> {
    stack.fake.state.reset_stats();
    let window = Duration::from_secs(p.saturation_secs);
    let (flood_n, _) = flood_size(p);
    let lanes = p.flood_conversations.max(1);
    let fake = stack.fake.state.clone();
    let sim = &stack.sim;
    stack.rt.block_on(async {
        load::inject_at_rate(sim, 2000.0, flood_n, |i| {
            format!("cidRep{n}x{rep}x{}==", i % lanes)
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while fake.stats().busy < p.limit {
            if Instant::now() >= deadline {
                return Err(anyhow!("the model never had {} busy slots", p.limit));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (seq0, busy0, t0) = (
            load::outbox_seq(sim).await?,
            fake.stats().busy_slot_us,
            Instant::now(),
        );
        tokio::time::sleep(window).await;
        let (seq1, busy1, t1) = (
            load::outbox_seq(sim).await?,
            fake.stats().busy_slot_us,
            Instant::now(),
        );
        let wall = t1.duration_since(t0);
        Ok(Run {
            replies_per_s: seq1.saturating_sub(seq0) as f64 / wall.as_secs_f64(),
            utilization: busy1.saturating_sub(busy0) as f64
                / (p.limit.max(1) as f64 * wall.as_micros() as f64),
            max_in_flight: fake.stats().max_in_flight,
        })
    })
}
