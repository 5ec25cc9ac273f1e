//! Figures taken inside our daemon: its own `/metrics` histograms of the ACK (frame read ->
//! ACK written), of the inbox journal's syncs (the disk's part of an ACK: one `fdatasync`
//! per batch of accepted messages) and of an answered turn's overhead (message read ->
//! reply delivered, less the waits in line and for and at the model), read before and
//! after a rate's run and subtracted, so each figure is that run's alone. The
//! simulator-clock figures of [`crate::load`] include the simulator's and the fake model's
//! own wake-ups and CPU on the same two cores; these are the bot process's part of them.
//!
//! A quantile read from a histogram is known to within its bucket: it is interpolated
//! linearly inside the bucket it falls in (the daemon's bounds step 1.33-2x from 0.1 ms
//! to 200 ms), and one past the last bound is reported as that bound.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The ACK histogram's name in the scrape.
const ACK: &str = "clawdbot_ack_duration_seconds";
/// The turn overhead histogram's name in the scrape.
const OVERHEAD: &str = "clawdbot_turn_overhead_seconds";
/// The inbox journal's sync histogram's name in the scrape.
const SYNC: &str = "clawdbot_inbox_sync_duration_seconds";
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One histogram's cumulative bucket counts, by upper bound in seconds (`+Inf` last).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: Vec<f64>,
    counts: Vec<f64>,
}

impl Buckets {
    /// The histogram `name` in a Prometheus text scrape.
    pub fn parse(scrape: &str, name: &str) -> Result<Buckets> {
        let prefix = format!("{name}_bucket{{le=\"");
        let (mut bounds, mut counts) = (Vec::new(), Vec::new());
        for line in scrape.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (le, value) = rest
                .split_once("\"} ")
                .ok_or_else(|| anyhow!("unreadable bucket line {line:?}"))?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()
                    .with_context(|| format!("bucket bound in {line:?}"))?
            };
            bounds.push(bound);
            counts.push(
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("count in {line:?}"))?,
            );
        }
        if bounds.is_empty() {
            bail!("no {name} histogram in the scrape");
        }
        Ok(Buckets { bounds, counts })
    }

    /// What was observed between `earlier` and `self` (the same histogram, scraped twice).
    pub fn since(&self, earlier: &Buckets) -> Result<Buckets> {
        if self.bounds != earlier.bounds {
            bail!("the histogram's buckets changed between two scrapes");
        }
        let counts = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(a, b)| a - b)
            .collect();
        Ok(Buckets {
            bounds: self.bounds.clone(),
            counts,
        })
    }

    /// Observations counted.
    pub fn total(&self) -> f64 {
        self.counts.last().copied().unwrap_or(0.0)
    }

    /// The `q` quantile in milliseconds (None without observations): interpolated inside
    /// its bucket, the last finite bound when it lies past it.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0); // (bound, cumulative count) below the current bucket
        for (&bound, &count) in self.bounds.iter().zip(&self.counts) {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0 * 1000.0);
                }
                let in_bucket = count - lower.1;
                let share = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some((lower.0 + share * (bound - lower.0)) * 1000.0);
            }
            lower = (bound, count);
        }
        Some(lower.0 * 1000.0)
    }
}

/// The three histograms at one moment.
#[derive(Debug, Clone)]
pub struct Inside {
    ack: Buckets,
    sync: Buckets,
    overhead: Buckets,
}

/// p50 and p99 of one in-daemon figure, ms.
#[derive(Debug, Clone, Copy)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

impl Quantiles {
    fn of(b: &Buckets) -> Option<Quantiles> {
        Some(Quantiles {
            p50: b.quantile_ms(0.50)?,
            p99: b.quantile_ms(0.99)?,
        })
    }
}

/// One run's in-daemon figures.
#[derive(Debug, Clone, Copy)]
pub struct InsideRun {
    pub ack: Option<Quantiles>,
    /// Per sync, not per message: a sync covers every message accepted while the one
    /// before it ran.
    pub sync: Option<Quantiles>,
    pub overhead: Option<Quantiles>,
    /// ACKs and answered turns the daemon counted in the run.
    pub acks_counted: f64,
    pub turns_counted: f64,
}

impl Inside {
    /// Scrapes `metrics_url` (the daemon's `/metrics`).
    pub async fn scrape(metrics_url: &str) -> Result<Inside> {
        let body = reqwest::Client::new()
            .get(metrics_url)
            .timeout(SCRAPE_TIMEOUT)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("scraping {metrics_url}"))?
            .text()
            .await
            .with_context(|| format!("reading {metrics_url}"))?;
        Ok(Inside {
            ack: Buckets::parse(&body, ACK)?,
            sync: Buckets::parse(&body, SYNC)?,
            overhead: Buckets::parse(&body, OVERHEAD)?,
        })
    }

    /// The figures of what happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Inside) -> Result<InsideRun> {
        let (ack, overhead) = (
            self.ack.since(&earlier.ack)?,
            self.overhead.since(&earlier.overhead)?,
        );
        Ok(InsideRun {
            ack: Quantiles::of(&ack),
            sync: Quantiles::of(&self.sync.since(&earlier.sync)?),
            overhead: Quantiles::of(&overhead),
            acks_counted: ack.total(),
            turns_counted: overhead.total(),
        })
    }
}

/// Checks the quantile reading on a known histogram (run when this binary runs without
/// `--bench`, as `cargo test --all-targets` runs it: a bench has no test harness).
pub fn check_quantile_reading() -> Result<()> {
    const SCRAPE: &str = "\
# TYPE clawdbot_ack_duration_seconds histogram
clawdbot_ack_duration_seconds_count 100
clawdbot_ack_duration_seconds_bucket{le=\"0.0001\"} 0
clawdbot_ack_duration_seconds_bucket{le=\"0.0002\"} 50
clawdbot_ack_duration_seconds_bucket{le=\"0.001\"} 98
clawdbot_ack_duration_seconds_bucket{le=\"+Inf\"} 100
";
    let before = Buckets::parse(SCRAPE, ACK)?;
    let after = Buckets::parse(&SCRAPE.replace("} 100\n", "} 104\n"), ACK)?;
    let run = after.since(&before)?;
    let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);
    let checks = [
        // Rank 50 is the top of the 0.1-0.2 ms bucket.
        ("p50", near(before.quantile_ms(0.5), 0.2)),
        // Rank 74: halfway through the 0.2-1 ms bucket (48 observations above 50).
        ("p74", near(before.quantile_ms(0.74), 0.6)),
        // Rank 99 lies past the last finite bound: reported as that bound.
        ("p99", near(before.quantile_ms(0.99), 1.0)),
        // The four observed between the scrapes all lie past 1 ms.
        (
            "a run's own",
            run.total() == 4.0 && near(run.quantile_ms(0.5), 1.0),
        ),
        (
            "an empty run",
            before.since(&before)?.quantile_ms(0.5).is_none(),
        ),
        (
            "a missing histogram",
            Buckets::parse(SCRAPE, OVERHEAD).is_err(),
        ),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => bail!("inside.rs reads {what} of a histogram wrong"),
        None => Ok(()),
    }
}
