//! The daemon's tracing setup: a lossless non-blocking writer over a size-rotated file,
//! text or JSON records, and a layer that remembers the last error for `status`.
//!
//! Privacy rule for every module: log lengths, hashes, ids and figures, never message
//! text, prompts, answers or secrets unless `logging.log_message_text` is on
//! (see [`text_for_log`]).

mod rotate;

pub use rotate::{request_reopen, write_errors, RotatingFile};

use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// The most recent ERROR record's message, shared with the status report.
#[derive(Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    pub fn get(&self) -> Option<String> {
        self.0.lock().map(|g| g.clone()).unwrap_or(None)
    }
    pub fn set(&self, msg: String) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(msg);
        }
    }
}

struct LastErrorLayer(LastError);

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for LastErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            let mut v = MessageVisitor(String::new());
            event.record(&mut v);
            self.0.set(v.0);
        }
    }
}

/// Installs the global subscriber writing to `path`. Keep the guard alive for the
/// daemon's life: dropping it flushes every queued record.
pub fn init(path: &Path, cfg: &LoggingConfig) -> std::io::Result<(WorkerGuard, LastError)> {
    let file = RotatingFile::open(path, cfg.max_bytes, cfg.max_files)?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .finish(file);
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let last = LastError::default();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(LastErrorLayer(last.clone()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    let result = match cfg.format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    // A second init in the same process (tests) keeps the first subscriber.
    let _ = result;
    Ok((guard, last))
}

/// What may be logged about a piece of user text: its length and a short hash, or the
/// text itself when the operator opted in.
pub fn text_for_log(text: &str, log_message_text: bool) -> String {
    if log_message_text {
        return format!("{text:?}");
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("<{} chars, sha256:{hex}>", text.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_log_hides_text_by_default() {
        let s = text_for_log("canary-XYZ", false);
        assert!(!s.contains("canary"));
        assert!(s.contains("10 chars"));
        assert!(text_for_log("canary-XYZ", true).contains("canary"));
    }
}
