//! The daemon's tracing setup: a batching writer that never blocks ([`worker`]) over a size-rotated
//! file or stderr, text or JSON records, and a layer that remembers the last error for
//! `status`.
//!
//! Privacy rule for every module: log lengths, keyed hashes, ids and figures, never message
//! text, prompts, answers or secrets unless `logging.log_message_text` is on
//! (see [`text_for_log`]). Dependencies cannot be held to that rule (the WebSocket and
//! HTTP stacks log whole frames at debug and trace), so [`filter`] caps them at `warn`
//! whatever `logging.level` says; the level applies to this program's own targets.
//! Text records escape control characters in every field ([`escape`]), so nothing logged
//! can break a record across lines, and the writer masks URL passwords in every record
//! of either format ([`mask_urls`]).
//!
//! Resolved errors: an ERROR event may carry `topic = "..."`; a later event carrying
//! `resolved = "..."` with the same value clears that error from [`LastError`] (a failed
//! config reload followed by a good one leaves no stale `last_error`).

mod escape;
mod mask_urls;
mod open;
mod rotate;
mod stderr;
mod target;
mod text_hash;
mod worker;

pub(crate) use open::check_log_path;
pub(crate) use target::LogTarget;
pub(crate) use target::{choose as choose_target, detect_collector, Collector};
pub(crate) use target::{describe_running, RunMode};

pub(crate) use rotate::{request_reopen, write_errors, RotatingFile};
pub(crate) use text_hash::text_for_log;
pub(crate) use text_hash::{install as install_hash_key, HashKey, KEY_FILE as HASH_KEY_FILE};

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogLevel, LoggingConfig};

/// The most verbose level any dependency may log at.
const DEPENDENCY_CAP: LevelFilter = LevelFilter::WARN;

/// The tracing target of a supervised model service's forwarded output (filter on it in
/// the daemon log). The word predates the name "model service" and stays for log filters.
pub(crate) const MODEL_SERVICE_OUTPUT_TARGET: &str = "gateway_output";

/// Targets written by this program: its modules, and the supervised model service's output.
const OWN_TARGETS: [&str; 2] = [env!("CARGO_CRATE_NAME"), MODEL_SERVICE_OUTPUT_TARGET];

/// The most recent ERROR record's message and topic, shared with the status report.
#[derive(Clone, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<Recorded>>>);

#[derive(Clone)]
struct Recorded {
    message: String,
    /// The event's `topic` field: what a later `resolved` event may clear.
    topic: Option<String>,
}

impl LastError {
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .map(|g| g.as_ref().map(|r| r.message.clone()))
            .unwrap_or(None)
    }
    /// Keeps `r` as `status` may show it: on one line, URL passwords masked.
    fn record(&self, mut r: Recorded) {
        let masked = crate::redact_url::redact_url(&r.message);
        r.message = crate::control_chars::escape_controls(&masked).into_owned();
        if let Ok(mut g) = self.0.lock() {
            *g = Some(r);
        }
    }
    /// Forgets the last error if its topic is `topic` (a later error stays).
    fn resolve(&self, topic: &str) {
        if let Ok(mut g) = self.0.lock() {
            if g.as_ref().and_then(|r| r.topic.as_deref()) == Some(topic) {
                *g = None;
            }
        }
    }
}

struct LastErrorLayer(LastError);

/// An ERROR event's message with its other fields appended as `name=value`, values
/// quoted as the text log quotes them; `topic` is kept apart (it steers [`LastError`],
/// it is not part of the message).
#[derive(Default)]
struct EventFields {
    message: String,
    topic: Option<String>,
}

impl EventFields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "topic" => self.topic = Some(value),
            "resolved" => {}
            name => {
                // Quoted as in the text log, so a hostile value (a message id) cannot
                // read as further fields of the status's `last_error`.
                self.message.push(' ');
                self.message
                    .push_str(name.strip_prefix("r#").unwrap_or(name));
                self.message.push('=');
                escape::push_value(&mut self.message, &value);
            }
        }
    }
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }
}

/// The `resolved` field of an event, and nothing else: what a non-ERROR event can tell
/// [`LastError`]. Every info record passes here (two a turn), so it formats no other field.
#[derive(Default)]
struct ResolvedField(Option<String>);

impl Visit for ResolvedField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "resolved" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "resolved" {
            self.0 = Some(value.to_string());
        }
    }
}

impl<S: Subscriber> Layer<S> for LastErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            let mut f = EventFields::default();
            event.record(&mut f);
            self.0.record(Recorded {
                message: f.message,
                topic: f.topic,
            });
            return;
        }
        if event.metadata().fields().field("resolved").is_none() {
            return;
        }
        let mut resolved = ResolvedField::default();
        event.record(&mut resolved);
        if let Some(topic) = &resolved.0 {
            self.0.resolve(topic);
        }
    }
}

/// `level` for this program's own targets; dependencies at most [`DEPENDENCY_CAP`] (and
/// never more verbose than `level`).
pub(crate) fn filter(level: LogLevel) -> Targets {
    let own = level_filter(level);
    own_and_others(own, own.min(DEPENDENCY_CAP))
}

/// What [`LastErrorLayer`] sees whatever the file's level: every ERROR, and this
/// program's events up to `info` (where `resolved` events are logged).
fn last_error_filter() -> Targets {
    own_and_others(LevelFilter::INFO, LevelFilter::ERROR)
}

/// [`OWN_TARGETS`] at `own`, every other target at `others`.
fn own_and_others(own: LevelFilter, others: LevelFilter) -> Targets {
    OWN_TARGETS
        .into_iter()
        .fold(Targets::new().with_default(others), |t, target| {
            t.with_target(target, own)
        })
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber writing to `target`. Keep the guard alive for the
/// daemon's life: dropping it flushes every queued record.
pub(crate) fn init(
    target: &LogTarget,
    cfg: &LoggingConfig,
) -> std::io::Result<(worker::WorkerGuard, LastError)> {
    let settings = worker::Settings::default();
    let (writer, guard) = match target {
        LogTarget::File(path) => worker::spawn(
            RotatingFile::open(path, cfg.max_bytes, cfg.max_files)?,
            settings,
        )?,
        // One `write` per batch, as for a file (records are never split: a batch is
        // written whole when it fits, and a bigger record goes out alone).
        LogTarget::Stderr => worker::spawn(
            std::io::BufWriter::with_capacity(64 * 1024, stderr::StderrLog),
            settings,
        )?,
    };
    let last = LastError::default();
    let registry = tracing_subscriber::registry()
        .with(LastErrorLayer(last.clone()).with_filter(last_error_filter()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(mask_urls::MaskUrls(writer))
        .with_ansi(false);
    let result = match cfg.format {
        LogFormat::Text => registry
            .with(
                fmt.fmt_fields(escape::EscapedFields)
                    .with_filter(filter(cfg.level)),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_filter(filter(cfg.level)),
            )
            .try_init(),
    };
    // A second init in the same process (tests) keeps the first subscriber.
    let _ = result;
    Ok((guard, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_applies_to_own_targets_and_dependencies_stay_at_warn() {
        let trace = filter(LogLevel::Trace);
        assert!(trace.would_enable("clawdbot::dingtalk::stream", &Level::TRACE));
        assert!(trace.would_enable(MODEL_SERVICE_OUTPUT_TARGET, &Level::INFO));
        assert!(!trace.would_enable("tungstenite::protocol", &Level::DEBUG));
        assert!(!trace.would_enable("hyper_util::client", &Level::INFO));
        assert!(trace.would_enable("hyper_util::client", &Level::WARN));
        let error = filter(LogLevel::Error);
        assert!(!error.would_enable("clawdbot::bot", &Level::WARN));
        assert!(!error.would_enable("rustls", &Level::WARN));
    }

    #[test]
    fn a_resolved_topic_clears_only_its_own_error() {
        let last = LastError::default();
        let record = |topic: Option<&str>| {
            last.record(Recorded {
                message: "m".into(),
                topic: topic.map(String::from),
            })
        };
        record(Some("config_reload"));
        last.resolve("other");
        assert!(last.get().is_some());
        last.resolve("config_reload");
        assert!(last.get().is_none());
        record(None);
        last.resolve("config_reload");
        assert!(last.get().is_some(), "an unrelated error stays");
    }

    #[test]
    fn the_last_error_quotes_a_field_value_that_could_read_as_more_fields() {
        let last = LastError::default();
        let subscriber = tracing_subscriber::registry().with(LastErrorLayer(last.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(msg_id = "m1 error=forged", plain = 7, "send failed");
        });
        assert_eq!(
            last.get().unwrap(),
            r#"send failed msg_id="m1 error=forged" plain=7"#
        );
    }

    #[test]
    fn the_last_error_is_kept_on_one_line_without_url_passwords() {
        let last = LastError::default();
        last.record(Recorded {
            message: "GET http://u:pw7@h/x failed\nfake".into(),
            topic: None,
        });
        assert_eq!(last.get().unwrap(), "GET http://u:***@h/x failed\\nfake");
    }
}
