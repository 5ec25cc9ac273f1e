//! Distributions, the figures table and the JSON document.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// A latency distribution in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    /// The distribution of `samples` (None when empty; NaN samples are dropped).
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Option<Dist> {
        let v = sorted(samples)?;
        Some(Dist {
            n: v.len(),
            p50: nearest_rank(&v, 0.50),
            p99: nearest_rank(&v, 0.99),
            max: v[v.len() - 1],
        })
    }

    /// `p50 / p99 ms (n)`.
    pub fn show(&self) -> String {
        format!("{:.2} / {:.2} ms (n={})", self.p50, self.p99, self.n)
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "p50_ms": round3(self.p50), "p99_ms": round3(self.p99), "max_ms": round3(self.max)})
    }
}

/// `values` without NaNs, ascending (None when nothing is left).
fn sorted(values: impl IntoIterator<Item = f64>) -> Option<Vec<f64>> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then_some(v)
}

/// The `q` quantile of sorted, non-empty `v` by nearest rank.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The spread of one figure over repetitions: median, min and max (of per-run values).
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (None when empty; NaN values are dropped). The median of an
    /// even count is the lower middle value, so it is always a measured value.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v = sorted(values)?;
        Some(Spread {
            runs: v.len(),
            median: v[(v.len() - 1) / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// `median [min-max]` with `decimals` digits.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}-{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// [`Spread::show`] of a figure that may be missing (`-` then).
    pub fn show_or_dash(spread: Option<Spread>, decimals: usize) -> String {
        spread.map_or("-".to_string(), |s| s.show(decimals))
    }

    pub fn json(&self) -> Value {
        json!({"runs": self.runs, "median": round3(self.median), "min": round3(self.min), "max": round3(self.max)})
    }
}

/// Rounds to 3 decimals (microseconds when the unit is ms) for the JSON document.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One row of the table: what was measured, against which goal.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable JSON key, e.g. `ack_latency.100`.
    pub key: String,
    pub label: String,
    pub measured: String,
    pub goal: String,
    /// Whether the goal was met (None when there is no pass/fail goal).
    pub met: Option<bool>,
    /// The raw numbers behind `measured`.
    pub data: Value,
}

/// Every figure of one run, plus the parameters used.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn add(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        measured: impl Into<String>,
        goal: impl Into<String>,
        met: Option<bool>,
        data: Value,
    ) {
        let figure = Figure {
            key: key.into(),
            label: label.into(),
            measured: measured.into(),
            goal: goal.into(),
            met,
            data,
        };
        eprintln!("  {}: {}", figure.label, figure.measured);
        self.figures.push(figure);
    }

    /// Takes every figure's verdict away, and says so in its goal: a `--quick` run's
    /// sizes (one repetition, 1 s a rate, a tenth of the conversations) are too small to
    /// judge a goal set for the full mode.
    pub fn unjudged(&mut self, why: &str) {
        for f in &mut self.figures {
            if f.met.take().is_some() {
                f.goal = format!("{} ({why}: not judged)", f.goal);
            }
        }
    }

    /// Checks [`Report::unjudged`] without a stack (run under `cargo test`).
    pub fn check_unjudged() -> Result<()> {
        let mut report = Report::default();
        report.add("a", "judged", "1", "< 2", Some(true), json!(null));
        report.add("b", "shown", "1", "-", None, json!(null));
        report.unjudged("--quick");
        let cells: Vec<(&str, Option<bool>)> = report
            .figures
            .iter()
            .map(|f| (f.goal.as_str(), f.met))
            .collect();
        anyhow::ensure!(
            cells == [("< 2 (--quick: not judged)", None), ("-", None)],
            "unjudged: {cells:?}"
        );
        Ok(())
    }

    /// The figures as an aligned text table.
    pub fn table(&self) -> String {
        let head = ["figure", "measured", "goal", "met"];
        let rows: Vec<[String; 4]> = self
            .figures
            .iter()
            .map(|f| {
                let met = match f.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                [
                    f.label.clone(),
                    f.measured.clone(),
                    f.goal.clone(),
                    met.into(),
                ]
            })
            .collect();
        let mut widths = head.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "| {} |", padded.join(" | "));
        };
        line(&mut out, &head);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        for row in &rows {
            line(&mut out, &row.each_ref().map(String::as_str));
        }
        out
    }

    /// The figures as a README-ready markdown table (`| figure | measured | goal | met |`).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| figure | measured: median [min-max] | goal | met |\n|---|---|---|---|\n",
        );
        for f in &self.figures {
            let met = match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            let cell = |s: &str| s.replace('|', "\\|");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {met} |",
                cell(&f.label),
                cell(&f.measured),
                cell(&f.goal)
            );
        }
        out
    }

    /// The JSON document: `schema_version`, the machine, the parameters and every figure.
    pub fn json(&self, params: Value) -> Value {
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|f| {
                let doc = json!({"label": f.label, "measured": f.measured, "goal": f.goal,
                                 "met": f.met, "data": f.data});
                (f.key.clone(), doc)
            })
            .collect();
        json!({"schema_version": 1, "machine": machine(), "params": params, "figures": figures})
    }

    /// Writes the JSON document to `path` (creating its folder).
    pub fn write_json(&self, path: &Path, params: Value) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.json(params))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// The CPUs this process may run on.
pub fn machine_cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// CPU count, kernel and load average at the end of the run.
fn machine() -> Value {
    let cpus = machine_cpus();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    json!({"cpus": cpus, "kernel": read("/proc/sys/kernel/osrelease"),
           "loadavg": read("/proc/loadavg"), "os": std::env::consts::OS})
}

/// `VmRSS` of `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS line in {path}"))
}

/// The unit of `/proc/PID/stat` times: the kernel reports them in USER_HZ, which is 100
/// on every architecture Linux exposes to user space here (not the internal CONFIG_HZ).
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far, in seconds, split as `/proc/PID/stat` splits it.
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    /// In user space (field 14, utime).
    pub user: f64,
    /// In the kernel on the process's behalf (field 15, stime): its syscalls (a sync, a
    /// socket write, which on loopback also runs the receiving side's network stack),
    /// page faults, and the interrupts that came while it ran.
    pub kernel: f64,
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.user + self.kernel
    }

    /// The time used between `self` and the later reading `end`.
    pub fn until(&self, end: &CpuTime) -> CpuTime {
        CpuTime {
            user: end.user - self.user,
            kernel: end.kernel - self.kernel,
        }
    }
}

/// [`CpuTime`] `pid` has used so far, from `/proc/PID/stat` (fields 14 and 15, in clock
/// ticks: 10 ms resolution at the usual 100 Hz).
pub fn cpu_time(pid: u32) -> Result<CpuTime> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("no `)` in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let secs = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|ticks| ticks as f64 / USER_HZ)
            .with_context(|| format!("field {} of {path}", i + 3))
    };
    // After the name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    Ok(CpuTime {
        user: secs(11)?,
        kernel: secs(12)?,
    })
}

/// CPU time (user + kernel) `pid` has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    Ok(cpu_time(pid)?.total())
}

/// The machine's CPU time so far, in seconds summed over CPUs, from the `cpu` line of
/// `/proc/stat` (USER_HZ ticks).
#[derive(Debug, Clone, Copy)]
pub struct MachineTicks {
    /// Running this machine's own work: user, nice, system, irq and softirq time (not
    /// idle, not waiting for I/O; guest time is already inside user and nice).
    pub busy: f64,
    /// Steal: time a CPU had work but the hypervisor ran something else on it. On a
    /// shared virtual machine this is the host's load, and every latency waits through it.
    pub stolen: f64,
}

/// The machine's [`MachineTicks`] now.
pub fn machine_ticks() -> Result<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no `cpu` line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().context("a tick count in /proc/stat's cpu line"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice (steal since 2.6.11).
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0) as f64 / USER_HZ;
    Ok(MachineTicks {
        busy: [0, 1, 2, 5, 6].into_iter().map(field).sum(),
        stolen: field(7),
    })
}

/// Who used the machine's CPUs while one pass's load was offered, in cores (CPU seconds
/// over that wall time): the whole machine, the bot, the simulator, and this benchmark
/// process (the load generator and the in-process fake model). A knee where the machine
/// is near `cores` busy is the machine's, whatever the bot's own share.
#[derive(Debug, Clone, Copy)]
pub struct MachineShare {
    pub busy: f64,
    /// Cores the hypervisor took from this machine meanwhile (steal).
    pub stolen: f64,
    pub bot: f64,
    pub simulator: f64,
    pub bench: f64,
}

/// CPU counters at the start of a pass, for [`MachineShare`].
pub struct CpuMark {
    at: std::time::Instant,
    machine: MachineTicks,
    bot: f64,
    simulator: f64,
    bench: f64,
}

impl CpuMark {
    pub fn now(bot: u32, simulator: u32) -> Result<CpuMark> {
        Ok(CpuMark {
            at: std::time::Instant::now(),
            machine: machine_ticks()?,
            bot: cpu_secs(bot)?,
            simulator: cpu_secs(simulator)?,
            bench: cpu_secs(std::process::id())?,
        })
    }

    /// The shares since this mark, with `end` taken at the pass's end.
    pub fn share_until(&self, end: &CpuMark) -> MachineShare {
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let bot = (end.bot - self.bot) / wall;
        let simulator = (end.simulator - self.simulator) / wall;
        let bench = (end.bench - self.bench) / wall;
        // `/proc/stat`'s busy time is counted by timer ticks, which a tickless kernel
        // stops on an idle CPU, so it misses short bursts: at 250 msg/s it read 0.02 cores
        // with the bot alone at 0.15. The three processes' times are exact (the
        // scheduler's runtime), so the machine is never shown below their sum.
        let ticked = (end.machine.busy - self.machine.busy) / wall;
        MachineShare {
            busy: ticked.max(bot + simulator + bench),
            stolen: (end.machine.stolen - self.machine.stolen) / wall,
            bot,
            simulator,
            bench,
        }
    }
}
