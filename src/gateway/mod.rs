//! A supervised model gateway (placeholder until the operator-commands issue lands).

use std::time::Duration;

use crate::daemon::workload::{BoxFuture, WorkError, Workload};
use crate::ipc::proto::{ErrorKind, HealthReport, SendOutcome};
use crate::status::DaemonReport;

pub struct Gateway;

impl Gateway {
    pub async fn start(_cmd: &str, _health_url: Option<String>) -> Result<Gateway, String> {
        Err("--exec: supervised gateways are not yet implemented".into())
    }
}

impl Workload for Gateway {
    fn kind(&self) -> &'static str {
        "gateway"
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
        Box::pin(async {
            Err((
                ErrorKind::Unsupported,
                "a gateway daemon cannot send messages".into(),
            ))
        })
    }
    fn shutdown(&self, _drain: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
