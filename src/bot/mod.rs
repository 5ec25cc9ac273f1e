//! The bot workload: DingTalk channel in, local model out.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::workload::{BoxFuture, WorkError, Workload};
use crate::ipc::proto::{ErrorKind, HealthReport, SendOutcome};
use crate::paths::DaemonPaths;
use crate::status::DaemonReport;

pub struct Bot {
    #[allow(dead_code)]
    config: Config,
    #[allow(dead_code)]
    config_path: PathBuf,
}

impl Bot {
    pub async fn start(
        config: Config,
        config_path: PathBuf,
        _paths: DaemonPaths,
    ) -> Result<Bot, String> {
        if config.channel.is_none() {
            tracing::warn!("no channel section in the config: the bot receives no messages");
        }
        Ok(Bot {
            config,
            config_path,
        })
    }
}

impl Workload for Bot {
    fn kind(&self) -> &'static str {
        "bot"
    }
    fn fill_report(&self, _report: &mut DaemonReport) {}
    fn health(&self, _timeout: Duration) -> BoxFuture<'_, HealthReport> {
        Box::pin(async { HealthReport::default() })
    }
    fn send(
        &self,
        _to: String,
        _text: String,
        _markdown: bool,
    ) -> BoxFuture<'_, Result<SendOutcome, WorkError>> {
        Box::pin(async { Err((ErrorKind::Unsupported, "send: not yet implemented".into())) })
    }
    fn shutdown(&self, _drain: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Pre-flight checks for `healthcheck --config` (no daemon).
pub async fn preflight_checks(_config: &Config, _timeout: Duration) -> HealthReport {
    HealthReport::default()
}
