//! What a daemon runs: the bot, or a supervised model gateway. The control server and the
//! lifecycle code only see this trait.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::ipc::proto::{ErrorKind, HealthReport, SeenConversation, SendOutcome};
use crate::status::DaemonReport;

/// A refusal or failure the control server sends back as `Response::Error`.
pub type WorkError = (ErrorKind, String);

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
    /// The conversations seen recently, newest first, at most `limit` (bots only).
    fn conversations(&self, _limit: usize) -> Result<Vec<SeenConversation>, WorkError> {
        Err((
            ErrorKind::Unsupported,
            format!("a {} daemon has no conversations", self.kind()),
        ))
    }
    /// Stops taking work and finishes in-flight work for up to `drain`.
    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()>;
    /// What `/readyz` judges; `None` for a workload without a channel (the gateway),
    /// which is ready while it runs.
    fn readiness(&self) -> Option<crate::ops::readiness::ReadinessFacts> {
        None
    }
    /// Re-reads the config (SIGHUP). An error keeps the old config and says why.
    fn reload(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("this daemon has nothing to reload".to_string()) })
    }
}
