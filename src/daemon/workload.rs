//! What a daemon runs: the bot, or a supervised model service. The control server and the
//! lifecycle code only see the [`Workload`] trait, and the daemon builds its workload
//! through the [`WorkloadFactory`] it is given: `daemon/` names no workload.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::Config;
use crate::ipc::proto::{ErrorKind, HealthReport, SeenConversation, SendOutcome};
use crate::paths::DaemonPaths;
use crate::status::DaemonReport;

use super::Launch;

/// A refusal or failure of a workload; the control server sends it back as
/// `Response::Error` with its [`ErrorKind`]. The message says what and why, never a
/// message text or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct WorkError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl WorkError {
    /// This workload cannot do that (a send to a model-service daemon, a reload of a
    /// daemon with nothing to reload).
    pub(crate) fn unsupported(message: impl Into<String>) -> WorkError {
        WorkError {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    /// It tried and failed.
    pub(crate) fn failed(message: impl Into<String>) -> WorkError {
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

/// Starts the workload a [`Launch`] describes, inside the daemon's tokio runtime, once the
/// pid lock is held, the log is open and the control socket is bound. `config` is the
/// launch's config, loaded (absent for a model service started without one). The error
/// is one line for `daemon start` to print, with the exit code its cause picks (a config
/// the bot cannot use is a usage error).
pub(crate) trait WorkloadFactory: Sync {
    fn start<'a>(
        &'a self,
        paths: &'a DaemonPaths,
        launch: &'a Launch,
        config: Option<Config>,
    ) -> BoxFuture<'a, Result<Arc<dyn Workload>, crate::exit::CliError>>;
}

pub(crate) trait Workload: Send + Sync + 'static {
    /// `bot` or `gateway` (the model service; the word status JSON already uses).
    fn kind(&self) -> &'static str;
    /// Adds this workload's figures (channel, models, model service) to the report.
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
    /// The conversations seen recently, newest first, at most `limit` (bots only).
    fn conversations(&self, _limit: usize) -> Result<Vec<SeenConversation>, WorkError> {
        Err(WorkError::unsupported(format!(
            "a {} daemon has no conversations",
            self.kind()
        )))
    }
    /// Stops taking work and finishes in-flight work for up to `drain`.
    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()>;
    /// What `/readyz` judges; `None` for a workload without a channel (the model service),
    /// which is ready while it runs.
    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        None
    }
    /// Re-reads the config (SIGHUP). An error keeps the old config and says why.
    fn reload(&self) -> BoxFuture<'_, Result<(), WorkError>> {
        Box::pin(async { Err(WorkError::unsupported("this daemon has nothing to reload")) })
    }
}
