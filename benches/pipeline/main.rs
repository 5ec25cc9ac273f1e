//! End-to-end pipeline benchmark: `cargo bench --bench pipeline`.
//!
//! Runs the real simulator and bot daemon against the in-process fake model on
//! loopback, then prints a figures table (stdout) and writes a JSON document
//! (`target/bench/pipeline.json` unless `--out`). Progress goes to stderr. Every
//! scenario is bounded in messages and time; the whole run takes about a minute.
//!
//! Without `--bench` (e.g. under `cargo test --all-targets`) it does nothing.

mod load;
mod report;
mod scenarios;
mod stack;
#[path = "../../tests/support/config.rs"]
mod test_config;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use serde_json::json;

use report::Report;
use stack::Stack;

/// Benchmark parameters (pass after `--`: `cargo bench --bench pipeline -- --latency-ms 100`).
#[derive(Debug, Parser)]
#[command(name = "pipeline", about = "clawdbot pipeline benchmark")]
pub struct Params {
    /// Set by `cargo bench`; without it the benchmark does nothing.
    #[arg(long, hide = true)]
    bench: bool,
    /// Offered loads (msg/s) for the ACK and overhead figures.
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub rates: Vec<u32>,
    /// Seconds of injection per offered load.
    #[arg(long, default_value_t = 3)]
    pub load_secs: u64,
    /// Conversations the offered load is spread over.
    #[arg(long, default_value_t = 200)]
    pub load_conversations: usize,
    /// Fake model latency for the overhead and memory runs (subtracted as service time).
    #[arg(long, default_value_t = 2)]
    pub fast_latency_ms: u64,
    /// Bot concurrency limit N for the saturation run.
    #[arg(long, default_value_t = 4)]
    pub limit: usize,
    /// Fake model server slots for the saturation run.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Fake model latency for the saturation run.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Length of the utilization window.
    #[arg(long, default_value_t = 4)]
    pub saturation_secs: u64,
    /// Conversations flooding during the saturation run.
    #[arg(long, default_value_t = 8)]
    pub flood_conversations: usize,
    /// Questions the quiet conversation asks during the flood.
    #[arg(long, default_value_t = 5)]
    pub quiet_messages: usize,
    /// Distinct conversations for the memory figure.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    /// Injection rate (msg/s) for the memory run.
    #[arg(long, default_value_t = 400.0)]
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
}

impl Params {
    /// The parameters as JSON, for the report.
    fn json(&self) -> serde_json::Value {
        json!({"rates": self.rates, "load_secs": self.load_secs, "load_conversations": self.load_conversations,
               "fast_latency_ms": self.fast_latency_ms, "limit": self.limit, "slots": self.slots,
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
    let p = Params::parse();
    if !p.bench {
        eprintln!("pipeline benchmark skipped: run it with `cargo bench --bench pipeline`");
        return Ok(());
    }
    let report = run(&p)?;
    println!("{}", report.table());
    let path = p.out_path();
    report.write_json(&path, p.json())?;
    eprintln!("JSON: {}", path.display());
    Ok(())
}

/// Every scenario in order: starts (fresh daemon), memory, offered loads, CLI, saturation.
fn run(p: &Params) -> Result<Report> {
    let mut report = Report::default();
    let stack = Stack::start(scenarios::fake_config(p.fast_latency_ms, None))?;
    let wide = stack.write_config(scenarios::wide_limits())?;
    eprintln!("== daemon start x{}", p.starts);
    scenarios::start_to_ready(&stack, &wide, p.starts, &mut report)?;
    eprintln!("== memory: idle, then {} conversations", p.conversations);
    scenarios::memory(&stack, p, &mut report)?;
    for &rate in &p.rates {
        eprintln!("== offered load {rate} msg/s for {} s", p.load_secs);
        scenarios::overhead(&stack, rate, p, &mut report)?;
    }
    eprintln!("== CLI x{}", p.cli_runs);
    scenarios::cli(&stack, p.cli_runs, &mut report)?;
    eprintln!(
        "== saturation: N={} slots={} latency {} ms",
        p.limit, p.slots, p.latency_ms
    );
    scenarios::saturation(&stack, p, &mut report)?;
    Ok(report)
}
