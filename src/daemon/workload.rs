//! What a daemon runs: the bot, or a supervised model gateway. The control server and the
//! lifecycle code only see this trait.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::ipc::proto::{ErrorKind, HealthReport, SendOutcome};
use crate::status::DaemonReport;

/// A refusal or failure of a workload; the control server sends it back as
/// `Response::Error` with its [`ErrorKind`]. The message says what and why, never a
/// message text or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WorkError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WorkError {
    /// This workload cannot do that (a send to a model-service daemon, a reload of a
    /// daemon with nothing to reload).
    pub fn unsupported(message: impl Into<String>) -> WorkError {
        WorkError {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    /// It tried and failed.
    pub fn failed(message: impl Into<String>) -> WorkError {
        WorkError {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }
}

impl From<crate::config::ConfigError> for WorkError {
    fn from(e: crate::config::ConfigError) -> Self {
        WorkError::failed(e.to_string())
    }
}

pub trait Workload: Send + Sync + 'static {
    /// `bot` or `gateway`.
    fn kind(&self) -> &'static str;
    /// Adds this workload's figures (channel, models, gateway) to the report.
    fn fill_report(&self, report: &mut DaemonReport);
    /// Live checks, bounded by `timeout`.
    fn health(&self, timeout: Duration) -> BoxFuture<'_, HealthReport>;
    /// A proactive message (bots only).
    fn send(
        &self,
        to: String,
        text: String,
        markdown: bool,
    ) -> BoxFuture<'_, Result<SendOutcome, WorkError>>;
    /// Stops taking work and finishes in-flight work for up to `drain`.
    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()>;
    /// What `/readyz` judges; `None` for a workload without a channel (the gateway),
    /// which is ready while it runs.
    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        None
    }
    /// Re-reads the config (SIGHUP). An error keeps the old config and says why.
    fn reload(&self) -> BoxFuture<'_, Result<(), WorkError>> {
        Box::pin(async { Err(WorkError::unsupported("this daemon has nothing to reload")) })
    }
}
