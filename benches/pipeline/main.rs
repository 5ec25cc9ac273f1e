//! End-to-end pipeline benchmark: `cargo bench --bench pipeline`.
//!
//! Runs the real simulator and bot daemon against the in-process fake model on
//! loopback, then prints a figures table (stdout) and writes a JSON document
//! (`target/bench/pipeline.json` unless `--out`). Progress goes to stderr. Every
//! scenario is bounded in messages and time. Every figure is the median [min-max] over
//! `--reps` repetitions; `--quick` is a CI smoke run; `--markdown` prints the table for
//! the README. Scenarios: daemon start, RSS at 10 000 conversations, the rate ramp (ACK,
//! overhead against a 0 ms model, CPU per turn, the knee), CLI, slot saturation with the
//! quiet conversation, 1-3 replicas on Redis sharing one limit (`replicas`), and the
//! reference bot (benches/reference_bot) under the same ramp.
//!
//! Without `--bench` (e.g. under `cargo test --all-targets`) it only checks that the
//! README's benchmark commands parse and that in-daemon histograms are read right.

mod floor;
mod floor_ack;
mod floor_http;
mod inside;
mod load;
mod readme;
mod reference;
mod replicas;
mod report;
mod scenarios;
mod stack;
#[path = "../../tests/support/config.rs"]
mod test_config;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use reference::ReferenceBot;
use report::Report;
use stack::Stack;

/// Benchmark parameters (pass after `--`: `cargo bench --bench pipeline -- --reps 7`).
#[derive(Debug, Parser)]
#[command(name = "pipeline", about = "clawdbot pipeline benchmark")]
pub struct Params {
    /// Set by `cargo bench`; without it the benchmark only checks the README's commands.
    #[arg(long, hide = true)]
    bench: bool,
    /// CI smoke: one repetition of a short run at 100 and 1000 msg/s, 1 000 conversations,
    /// short floods (overrides the sizes below; the figures are not for comparing).
    #[arg(long)]
    pub quick: bool,
    /// Print the figures as a README-ready markdown table instead of the aligned text one.
    #[arg(long)]
    pub markdown: bool,
    /// Skip the reference bot (Python), even when its venv exists.
    #[arg(long)]
    pub no_reference: bool,
    /// Repetitions of every measured run; each figure is the median [min-max] over them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub reps: u64,
    /// The rate ramp (msg/s) for the ACK, overhead, CPU figures and the knee.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,250,500,1000,2000,4000"
    )]
    pub rates: Vec<u32>,
    /// Seconds of injection per rate and pass.
    #[arg(long, default_value_t = 2)]
    pub load_secs: u64,
    /// Conversations the offered load is spread over.
    #[arg(long, default_value_t = 200)]
    pub load_conversations: usize,
    /// Bot concurrency limit N for the saturation run.
    #[arg(long, default_value_t = 4)]
    pub limit: usize,
    /// Fake model server slots for the saturation run.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Fake model latency (the service time) for the saturation run.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Length of the utilization window.
    #[arg(long, default_value_t = 4)]
    pub saturation_secs: u64,
    /// Conversations flooding during the saturation run.
    #[arg(long, default_value_t = 8)]
    pub flood_conversations: usize,
    /// Questions the quiet conversation asks during each flood.
    #[arg(long, default_value_t = 5)]
    pub quiet_messages: usize,
    /// Distinct conversations for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    /// Injection rate (msg/s) for the memory run: below the knee, so the figure is what
    /// the conversations keep, not the high-water mark of a backlog (glibc keeps freed
    /// heap; a burst past the knee leaves 10-20 KiB per message of RSS behind).
    #[arg(long, default_value_t = 500.0)]
    pub memory_rate: f64,
    /// Runs of each CLI command timed.
    #[arg(long, default_value_t = 50)]
    pub cli_runs: usize,
    /// `daemon start` cycles timed.
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// Where to write the JSON document.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only these scenarios (default: all), e.g. `--only ramp` to profile the hot path.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Scenario>,
    /// Seconds to wait before each ramp pass, once that pass's fresh daemon started, with
    /// its PID on stderr, so `perf record -p PID` can be attached; and again after the
    /// ramp, so what a burst left in its heap can be looked at (`gdb -p PID`,
    /// `/proc/PID/smaps`).
    #[arg(long, default_value_t = 0)]
    pub attach_secs: u64,
}

/// The scenarios `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Start,
    Memory,
    Ramp,
    Floor,
    Cli,
    Saturation,
    Replicas,
    Reference,
}

/// What `--quick` shrinks, as [`Params::resolved`] sets it.
const QUICK_SIZES: &str = "1 repetition, rates 100 and 1000 msg/s for 1 s each, 1 000 conversations, 2 s of saturation, 2 quiet questions, 10 CLI runs, 2 starts";

impl Params {
    /// `--quick` applied: the sizes of a CI smoke run ([`QUICK_SIZES`]).
    fn resolved(mut self) -> Params {
        if self.quick {
            self.reps = 1;
            self.rates = vec![100, 1000];
            self.load_secs = 1;
            self.conversations = 1000;
            self.saturation_secs = 2;
            self.quiet_messages = 2;
            self.cli_runs = 10;
            self.starts = 2;
        }
        self
    }

    /// Whether `--only` selects this scenario (all are selected without `--only`).
    fn runs(&self, scenario: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }

    /// The repetitions as a count.
    pub fn reps(&self) -> usize {
        usize::try_from(self.reps).unwrap_or(usize::MAX)
    }

    /// The parameters as JSON, for the report.
    fn json(&self) -> serde_json::Value {
        json!({"quick": self.quick, "reps": self.reps, "rates": self.rates, "load_secs": self.load_secs,
               "load_conversations": self.load_conversations, "model_latency_ms_for_rates": 0,
               "limit": self.limit, "slots": self.slots,
               "latency_ms": self.latency_ms, "saturation_secs": self.saturation_secs,
               "flood_conversations": self.flood_conversations, "quiet_messages": self.quiet_messages,
               "conversations": self.conversations, "memory_rate": self.memory_rate,
               "cli_runs": self.cli_runs, "starts": self.starts})
    }

    /// `--out`, else `target/bench/pipeline.json`.
    fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            tmp.parent()
                .unwrap_or(&tmp)
                .join("bench")
                .join("pipeline.json")
        })
    }
}

fn main() -> Result<()> {
    // Under `cargo test` the arguments are the test harness's (filters, flags), not ours.
    if !std::env::args().any(|a| a == "--bench") {
        readme::check_bench_commands()?;
        inside::check_quantile_reading()?;
        scenarios::check_failed_counting()?;
        report::Report::check_unjudged()?;
        eprintln!("pipeline benchmark skipped: run it with `cargo bench --bench pipeline`");
        return Ok(());
    }
    let p = Params::parse().resolved();
    let began = std::time::Instant::now();
    if p.quick {
        eprintln!("== --quick: {QUICK_SIZES}; a smoke run, no goal is judged");
    }
    let mut report = run(&p)?;
    if p.quick {
        report.unjudged("--quick");
    }
    if p.markdown {
        println!("{}", report.markdown());
    } else {
        println!("{}", report.table());
    }
    let path = p.out_path();
    report.write_json(&path, p.json())?;
    eprintln!(
        "JSON: {} ({:.0} s)",
        path.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// With `--attach-secs`, prints the daemon's PID with `when` and waits, so a profiler or
/// debugger can be attached.
fn wait_to_attach(p: &Params, pid: u32, when: &str) {
    if p.attach_secs > 0 {
        eprintln!(
            "== daemon PID {pid}: waiting {} s (--attach-secs); {when}",
            p.attach_secs
        );
        std::thread::sleep(std::time::Duration::from_secs(p.attach_secs));
    }
}

/// Every scenario in order: starts, memory (fresh daemons), the rate ramp, the floors (the
/// disk alone, ours on tmpfs, a durable ACK alone), CLI, saturation, replicas, then the reference bot's ramp
/// (our daemon stopped).
fn run(p: &Params) -> Result<Report> {
    let mut report = Report::default();
    // The rate ramp and the memory run use a 0 ms model: all the measured time is ours.
    let stack = Stack::start(scenarios::fake_config(0, None))?;
    let wide = stack.write_config(scenarios::wide_limits())?;
    if p.runs(Scenario::Start) {
        eprintln!("== daemon start x{}", p.starts);
        scenarios::start_to_ready(&stack, &wide, p.starts, &mut report)?;
    } else {
        stack.start_bot(&wide)?;
    }
    let mut rss_after = None;
    if p.runs(Scenario::Memory) {
        eprintln!(
            "== memory: idle, then {} conversations, x{}",
            p.conversations, p.reps
        );
        rss_after = Some(scenarios::memory(&stack, &wide, p, &mut report)?);
    }
    let mut ours = None;
    if p.runs(Scenario::Ramp) {
        eprintln!(
            "== rate ramp {:?} msg/s, {} s each, x{} (a fresh daemon each pass)",
            p.rates, p.load_secs, p.reps
        );
        let mut fresh = || {
            let pid = scenarios::fresh_daemon(&stack, &wide)?;
            wait_to_attach(p, pid, "its pass starts after");
            Ok(pid)
        };
        let metrics = stack.metrics_url();
        let by_rate = scenarios::by_rate(&scenarios::ramp(
            &stack,
            &mut fresh,
            Some(&metrics),
            "ours",
            &p.rates,
            false,
            p,
        )?);
        scenarios::add_ramp(&mut report, &by_rate);
        ours = Some(by_rate);
        wait_to_attach(
            p,
            stack.bot_pid()?,
            "ramp done, the heap is looked at after",
        );
    }
    let mut ack_floors = Vec::new();
    if p.runs(Scenario::Floor) {
        eprintln!(
            "== floors @ {} msg/s: this disk's append + fdatasync, a turn's loopback exchanges, a thread hand-off, a turn's HTTP requests through reqwest, ours on tmpfs, then a durable ACK alone, x{}",
            scenarios::GOAL_RATE,
            p.reps
        );
        let disk = floor::disk(stack.home(), p, &mut report)?;
        let net = floor::net(p, &mut report)?;
        let handoffs = floor::handoff(p, &mut report)?;
        let http_client = floor_http::http(p, floor::Floors::bare_exchange(net), &mut report)?;
        floor::Floors {
            disk,
            net,
            handoffs,
            http_client,
        }
        .report_sum(&mut report);
        floor::tmpfs(p, &mut report)?;
        ack_floors = floor_ack::ack(p, &mut report)?;
    }
    if p.runs(Scenario::Cli) {
        eprintln!("== CLI x{}", p.cli_runs);
        scenarios::cli(&stack, p.cli_runs, &mut report)?;
    }
    if p.runs(Scenario::Saturation) {
        eprintln!(
            "== saturation: N={} slots={} latency {} ms, x{}",
            p.limit, p.slots, p.latency_ms, p.reps
        );
        scenarios::saturation(&stack, p, &mut report)?;
    }
    if p.runs(Scenario::Replicas) {
        eprintln!(
            "== replicas 1, 2, 3 on Redis: one limit N={}, latency {} ms, x{}",
            p.limit, p.latency_ms, p.reps
        );
        replicas::replicas(&stack, p, &mut report)?;
    }
    if !p.runs(Scenario::Reference) {
        return Ok(report);
    }
    match (p.no_reference, reference::python()) {
        (true, _) => eprintln!("== reference bot skipped (--no-reference)"),
        (false, None) => {
            eprintln!("== reference bot skipped: no venv (run tests/python/setup.sh)");
            report.add(
                "reference.knee",
                "reference bot (Python SDK + aiohttp)",
                "skipped: no target/python-venv (run tests/python/setup.sh)",
                "-",
                None,
                json!(null),
            );
        }
        (false, Some(python)) => {
            eprintln!("== reference bot: rate ramp x{}", p.reps);
            stack.stop_bot()?;
            stack.fake.state.set_config(scenarios::fake_config(0, None));
            let limits = scenarios::wide_limits();
            let mut bot: Option<ReferenceBot> = None;
            let theirs = {
                let mut fresh = || {
                    if let Some(old) = bot.take() {
                        old.stop(&stack)?;
                    }
                    let new = ReferenceBot::start(&stack, &python, limits.concurrency)?;
                    let pid = new.pid();
                    bot = Some(new);
                    Ok(pid)
                };
                scenarios::by_rate(&scenarios::ramp(
                    &stack, &mut fresh, None, "ref", &p.rates, true, p,
                )?)
            };
            let bot = bot.context("the reference ramp ran no pass")?;
            let rss = report::rss_kib(bot.pid())? as f64 / 1024.0;
            bot.stop(&stack)?;
            match (&ours, rss_after) {
                (Some(ours), Some(rss_after)) => scenarios::add_reference(
                    &mut report,
                    ours,
                    &theirs,
                    (rss, rss_after),
                    &ack_floors,
                ),
                _ => eprintln!("== reference ratios need the ramp and memory scenarios too"),
            }
        }
    }
    Ok(report)
}
