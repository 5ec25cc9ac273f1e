//! Prometheus metrics: observations recorded where things happen (histograms, reply
//! outcomes), and figures read from the daemon's report at scrape time (counters and
//! gauges the channel, models and logger already keep).
//!
//! Invariants: label values are bounded: model names come from the config, outcomes
//! from fixed `&'static str` sets, never conversation or user ids; no metric carries
//! message text. Observations are process-wide (one daemon per process); the
//! [`Registry`] is built once per ops server.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

/// A model's replica by its index under `models.NAME.replicas` (never its URL, which may
/// hold a password): bounded by the config.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    model: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelOutcomeLabel {
    model: String,
    outcome: &'static str,
}

fn seconds_buckets() -> Histogram {
    // 50 ms .. ~102 s: a slow local model answers in seconds to a minute or two.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// 0.1 ms .. 200 ms in steps of 1.33-2x: for the bot's own sub-millisecond work (an ACK,
/// a turn's overhead), fine enough to read a p50 or p99 to within a step. Round bounds,
/// so a bucket's `le` reads as written.
fn fine_seconds_buckets() -> Histogram {
    const BOUNDS_MS: [f64; 20] = [
        0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
        50.0, 100.0, 200.0,
    ];
    Histogram::new(BOUNDS_MS.into_iter().map(|ms| ms / 1000.0))
}

/// What the code observes as it runs.
#[derive(Debug)]
pub(crate) struct Observed {
    turn_duration: Histogram,
    first_token: Family<ModelLabel, Histogram, fn() -> Histogram>,
    queue_wait: Histogram,
    ack_duration: Histogram,
    turn_overhead: Histogram,
    inbox_sync: Histogram,
    replies: Family<OutcomeLabel, Counter>,
}

/// The process-wide observations (always recorded; cheap when nobody scrapes).
pub(crate) fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| Observed {
        turn_duration: seconds_buckets(),
        first_token: Family::new_with_constructor(seconds_buckets),
        // 10 ms .. ~20 s.
        queue_wait: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
        ack_duration: fine_seconds_buckets(),
        turn_overhead: fine_seconds_buckets(),
        inbox_sync: fine_seconds_buckets(),
        replies: Family::default(),
    })
}

impl Observed {
    /// A turn ended; `took` runs from the message's arrival to its reply's end.
    pub(crate) fn turn_finished(&self, took: Duration) {
        self.turn_duration.observe(took.as_secs_f64());
    }

    /// `model` sent its first content after `took` (`model` is a config name).
    pub(crate) fn first_token(&self, model: &str, took: Duration) {
        self.first_token
            .get_or_create(&ModelLabel {
                model: model.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// An answered turn spent `took` in the bot itself (see [`crate::bot`]'s pipeline:
    /// from its message's read to its reply's end, less its waits in line and for and at
    /// the model).
    pub(crate) fn turn_overhead(&self, took: Duration) {
        self.turn_overhead.observe(took.as_secs_f64());
    }

    /// A turn got a model slot after waiting `took`.
    pub(crate) fn queue_waited(&self, took: Duration) {
        self.queue_wait.observe(took.as_secs_f64());
    }

    /// A stream frame was ACKed `took` after it was read.
    pub(crate) fn ack_written(&self, took: Duration) {
        self.ack_duration.observe(took.as_secs_f64());
    }

    /// One sync of the inbox journal (its `fdatasync`, which makes a batch of accepted
    /// messages durable before their frames are ACKed) took `took`.
    pub(crate) fn inbox_synced(&self, took: Duration) {
        self.inbox_sync.observe(took.as_secs_f64());
    }

    /// A reply went out for a message, under a fixed outcome label (`answer`, `busy`,
    /// `fallback`, `denied`...).
    pub(crate) fn replied(&self, outcome: &'static str) {
        self.replies.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Replies so far by outcome, for the status page.
    pub(crate) fn replies_by_outcome(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = KNOWN_OUTCOMES
            .iter()
            .map(|&o| {
                (
                    o,
                    self.replies
                        .get(&OutcomeLabel { outcome: o })
                        .map_or(0, |c| c.get()),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        out
    }
}

/// Every outcome label the pipeline completes a message under.
const KNOWN_OUTCOMES: &[&str] = &[
    "answer",
    "busy",
    "fallback",
    "denied",
    "rate_limited",
    "reset",
    "command_help",
    "command_status",
    "command_whoami",
    "empty",
    "unsupported",
    "restart_sorry",
];

/// A source of the figures read at scrape time.
pub(crate) type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// The registry of one ops server: the observations plus the report's figures.
pub(crate) fn registry(snapshot: SnapshotFn) -> Registry {
    let o = observed();
    let mut r = Registry::default();
    r.register_with_unit(
        "clawdbot_turn_duration",
        "Time from a message's arrival to the end of its reply",
        Unit::Seconds,
        o.turn_duration.clone(),
    );
    r.register_with_unit(
        "clawdbot_model_time_to_first_token",
        "Time from sending a model request to its first content",
        Unit::Seconds,
        o.first_token.clone(),
    );
    r.register_with_unit(
        "clawdbot_queue_wait",
        "Time a turn waited for a model slot",
        Unit::Seconds,
        o.queue_wait.clone(),
    );
    r.register_with_unit(
        "clawdbot_ack_duration",
        "Time from reading a stream frame to writing its ACK",
        Unit::Seconds,
        o.ack_duration.clone(),
    );
    r.register_with_unit(
        "clawdbot_turn_overhead",
        "Time an answered turn spent in the bot itself: from reading its message to the end \
         of its reply, less its wait for its conversation's earlier turns and its wait for \
         and at the model",
        Unit::Seconds,
        o.turn_overhead.clone(),
    );
    r.register_with_unit(
        "clawdbot_inbox_sync_duration",
        "Time one sync of the inbox journal took (fdatasync): a stream frame's ACK waits \
         for the sync that makes its message durable, so this is the disk's share of the \
         ACK time",
        Unit::Seconds,
        o.inbox_sync.clone(),
    );
    r.register(
        "clawdbot_replies",
        "Replies sent, by outcome",
        o.replies.clone(),
    );
    r.register_collector(Box::new(ReportCollector(snapshot)));
    r
}

/// Encodes `registry` in the OpenMetrics text format (what Prometheus asks for).
pub(crate) fn encode_openmetrics(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Encodes `registry` in the Prometheus text format 0.0.4, for clients that do not ask
/// for OpenMetrics (curl, `promtool check metrics`, older scrapers).
pub(crate) fn encode_prometheus_text(registry: &Registry) -> Result<String, fmt::Error> {
    encode_openmetrics(registry).map(|om| openmetrics_to_prometheus_text(&om))
}

/// Rewrites the crate's OpenMetrics output as Prometheus text 0.0.4. The two differ, for
/// what this registry holds, only in metadata: an OpenMetrics counter family `x` has
/// samples `x_total` where the older format names the family `x_total` too, and `# UNIT`
/// and `# EOF` lines do not exist there. Samples pass unchanged. (`prometheus-client`
/// writes only OpenMetrics; this keeps its output and renames, never formats values.)
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Counters and gauges read from the daemon's report at scrape time.
struct ReportCollector(SnapshotFn);

impl fmt::Debug for ReportCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReportCollector")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

impl Collector for ReportCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = (self.0)();
        let report = &snap.report;
        {
            let mut m = e.encode_descriptor(
                "clawdbot_build_info",
                "Build of the running daemon (always 1)",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        }
        counter(
            &mut e,
            "clawdbot_log_write_errors",
            "Log lines that could not be written",
            report.log_write_errors,
        )?;
        gauge(
            &mut e,
            "clawdbot_ready",
            "1 when /readyz answers 200",
            i64::from(snap.not_ready.is_empty()),
        )?;
        if let Some(pending) = snap.inbox_pending {
            gauge(
                &mut e,
                "clawdbot_inbox_pending",
                "Messages accepted and not answered yet",
                i64::try_from(pending).unwrap_or(i64::MAX),
            )?;
        }
        if let Some(ch) = &report.channel {
            counter(
                &mut e,
                "clawdbot_messages_received",
                "Messages received from DingTalk (duplicates excluded)",
                ch.messages_in,
            )?;
            counter(
                &mut e,
                "clawdbot_messages_sent",
                "Messages sent to DingTalk",
                ch.messages_out,
            )?;
            counter(
                &mut e,
                "clawdbot_send_failures",
                "Sends DingTalk did not take",
                ch.send_failures,
            )?;
            counter(
                &mut e,
                "clawdbot_channel_reconnects",
                "Stream reconnections",
                ch.reconnects,
            )?;
            counter(
                &mut e,
                "clawdbot_duplicates_dropped",
                "Redelivered messages dropped as duplicates",
                ch.duplicates_dropped,
            )?;
            let connected = ch.state == crate::status::channel_state::CONNECTED
                || ch.state == crate::status::channel_state::LISTENING;
            gauge(
                &mut e,
                "clawdbot_channel_connected",
                "1 while the channel is connected (stream) or listening (HTTP)",
                i64::from(connected),
            )?;
        }
        if let Some(alive) = report.state.as_ref().and_then(|s| s.alive_replicas) {
            gauge(
                &mut e,
                "clawdbot_alive_replicas",
                "Replicas sharing this bot's Redis state whose heartbeat is within the lease",
                i64::try_from(alive).unwrap_or(i64::MAX),
            )?;
        }
        self.encode_models(&mut e, &report.models)
    }
}

impl ReportCollector {
    fn encode_models(
        &self,
        e: &mut DescriptorEncoder,
        models: &[crate::status::ModelReport],
    ) -> Result<(), fmt::Error> {
        if models.is_empty() {
            return Ok(());
        }
        {
            let mut m = e.encode_descriptor(
                "clawdbot_model_requests",
                "Model requests by outcome (ok, error, timeout) and turns refused a slot (busy)",
                None,
                MetricType::Counter,
            )?;
            for r in models {
                for (outcome, n) in [
                    ("ok", r.served),
                    ("error", r.failures.saturating_sub(r.timeouts)),
                    ("timeout", r.timeouts),
                    ("busy", r.busy_rejections),
                ] {
                    let labels = ModelOutcomeLabel {
                        model: r.name.clone(),
                        outcome,
                    };
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        // Only with state.backend: redis (a local daemon's metrics stay as they were).
        if models.iter().any(|r| r.global_in_flight.is_some()) {
            let mut m = e.encode_descriptor(
                "clawdbot_model_global_in_flight",
                "Requests running on the model now across all replicas (state.backend: redis)",
                None,
                MetricType::Gauge,
            )?;
            for r in models {
                if let Some(n) = r.global_in_flight {
                    let labels = ModelLabel {
                        model: r.name.clone(),
                    };
                    ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let per_model: [Figure<crate::status::ModelReport>; 4] = [
            (
                "clawdbot_model_in_flight",
                "Requests running on the model now",
                MetricType::Gauge,
                |r| r.in_flight as i64,
            ),
            (
                "clawdbot_model_queue_depth",
                "Turns waiting for a slot of the model now",
                MetricType::Gauge,
                |r| r.queued as i64,
            ),
            (
                "clawdbot_model_slots",
                "Configured concurrency limit of the model",
                MetricType::Gauge,
                |r| r.limit as i64,
            ),
            (
                "clawdbot_model_fallbacks",
                "Failed requests after which the fallback model was tried",
                MetricType::Counter,
                |r| r.fallbacks as i64,
            ),
        ];
        let labelled: Vec<_> = models
            .iter()
            .map(|r| {
                let labels = ModelLabel {
                    model: r.name.clone(),
                };
                (labels, r)
            })
            .collect();
        encode_figures(e, &per_model, &labelled)?;
        self.encode_replicas(e, models)
    }

    /// Per-replica figures, labelled `model` and `replica` (its index).
    fn encode_replicas(
        &self,
        e: &mut DescriptorEncoder,
        models: &[crate::status::ModelReport],
    ) -> Result<(), fmt::Error> {
        let per_replica: [Figure<crate::status::ReplicaReport>; 4] = [
            (
                "clawdbot_model_replica_in_flight",
                "Requests running on the model's replica now",
                MetricType::Gauge,
                |r| r.in_flight as i64,
            ),
            (
                "clawdbot_model_replica_slots",
                "The replica's own concurrency limit",
                MetricType::Gauge,
                |r| r.limit as i64,
            ),
            (
                "clawdbot_model_replica_healthy",
                "1 while the replica takes traffic, 0 while it cools down after failures",
                MetricType::Gauge,
                |r| i64::from(r.state == "healthy"),
            ),
            (
                "clawdbot_model_replica_failures",
                "Requests that failed through the replica's fault (connect, 5xx, no first token)",
                MetricType::Counter,
                |r| r.failures as i64,
            ),
        ];
        let labelled: Vec<_> = models
            .iter()
            .flat_map(|model| {
                model.replicas.iter().enumerate().map(|(i, r)| {
                    let labels = ReplicaLabel {
                        model: model.name.clone(),
                        replica: i.to_string(),
                    };
                    (labels, r)
                })
            })
            .collect();
        encode_figures(e, &per_replica, &labelled)
    }
}

/// A figure read from a report: metric name, help, kind, and how to read it from a `T`.
type Figure<T> = (&'static str, &'static str, MetricType, fn(&T) -> i64);

/// One metric family per figure, one sample per labelled item.
fn encode_figures<T, L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    figures: &[Figure<T>],
    items: &[(L, &T)],
) -> Result<(), fmt::Error> {
    for (name, help, kind, figure) in figures {
        let mut m = e.encode_descriptor(name, help, None, *kind)?;
        for (labels, item) in items {
            let v = figure(item);
            let fam = m.encode_family(labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(v as u64).encode(fam)?,
                _ => ConstGauge::new(v).encode(fam)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_by_their_samples() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        c.inc();
        r.register("x_replies", "Replies", c);
        let h = Histogram::new(exponential_buckets(1.0, 2.0, 2));
        r.register_with_unit("x_wait", "Wait", Unit::Seconds, h);
        let om = encode_openmetrics(&r).unwrap();
        assert!(
            om.contains("# TYPE x_replies counter\n") && om.ends_with("# EOF\n"),
            "{om}"
        );
        let text = openmetrics_to_prometheus_text(&om);
        assert!(text.contains("# HELP x_replies_total Replies.\n"), "{text}");
        assert!(
            text.contains("# TYPE x_replies_total counter\nx_replies_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE x_wait_seconds histogram\n"), "{text}");
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        let samples = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(samples(&om), samples(&text), "samples unchanged");
    }
}
