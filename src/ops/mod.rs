//! The HTTP ops endpoint (`ops.listen`, off unless configured): `/livez`, `/readyz`,
//! `/metrics` (Prometheus text exposition), `/status.json` and a status page at `/`.
//!
//! Served by [`crate::listen::http::serve_http`] under the same header/idle timeouts and
//! connection cap as every other listener. Invariants: every answer holds figures and
//! states only (never message text, prompts, secrets or error texts); it reads the
//! daemon's live report and never blocks the bot's loops.

pub(crate) mod history;
mod host_check;
pub(crate) mod metrics;
pub(crate) mod readiness;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::OpsConfig;
use crate::listen::{BindError, ListenLimits};
use crate::status::DaemonReport;

/// The figures one answer is built from.
pub(crate) struct Snapshot {
    pub(crate) report: DaemonReport,
    /// Why the daemon is not ready; empty when it is.
    pub(crate) not_ready: Vec<String>,
    /// Messages accepted and not answered (bots only).
    pub(crate) inbox_pending: Option<u64>,
}

/// What the ops endpoint reads from the running daemon (the daemon's control state
/// implements it), so this module needs nothing of the daemon's own.
pub(crate) trait DaemonView: Send + Sync + 'static {
    /// The live report, as `daemon status` shows it.
    fn report(&self) -> DaemonReport;
    /// What `/readyz` judges; `None` for a workload without a channel.
    fn readiness(&self) -> Option<readiness::ReadinessFacts>;
    /// Whether the daemon was asked to shut down.
    fn draining(&self) -> bool;
}

/// Reads a [`Snapshot`] of the running daemon.
pub(crate) fn snapshot(control: &dyn DaemonView) -> Snapshot {
    let report = control.report();
    let draining = control.draining();
    let facts = control.readiness();
    let now = crate::clock::now_ms();
    let (mut not_ready, inbox_pending) = match &facts {
        Some(f) => (
            readiness::not_ready_reasons(f, now),
            Some(f.inbox.pending as u64),
        ),
        None => (Vec::new(), None),
    };
    let already_draining = facts.as_ref().is_some_and(|f| f.draining);
    if draining && !already_draining {
        not_ready.push("draining (shutting down)".to_string());
    }
    Snapshot {
        report,
        not_ready,
        inbox_pending,
    }
}

/// A running ops server; stopped when [`stop`](Self::stop)ped or dropped.
pub(crate) struct OpsServer {
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    sampler: JoinHandle<()>,
}

impl OpsServer {
    /// Binds `cfg.listen` (before the workload starts, so a taken port fails the start
    /// cleanly). The error names the key and the address.
    pub(crate) async fn bind(cfg: &OpsConfig) -> Result<(TcpListener, SocketAddr), BindError> {
        crate::listen::bind_tcp("ops.listen", &cfg.listen).await
    }

    /// Serves on `listener` bound to `addr` (both from [`bind`](Self::bind)) until stopped.
    /// Requests are answered only for the `Host` values of [`host_check`]: the bound
    /// address, `localhost`, and `allowed_hosts` (`ops.allowed_hosts`).
    pub(crate) fn start(
        (listener, addr): (TcpListener, SocketAddr),
        control: Arc<dyn DaemonView>,
        allowed_hosts: &[String],
    ) -> OpsServer {
        let allowed = Arc::new(host_check::AllowedHosts::new(addr, allowed_hosts));
        let state = Arc::new(routes::OpsState::new(control));
        let sampler = tokio::spawn(routes::sample_forever(state.clone()));
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(crate::listen::http::serve_http(
            "ops",
            listener,
            routes::router(state).layer(axum::middleware::from_fn_with_state(
                allowed,
                host_check::require_allowed_host,
            )),
            ListenLimits::http_default(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        tracing::info!(%addr, "ops endpoint listening (/livez /readyz /metrics /)");
        OpsServer {
            stop,
            server,
            sampler,
        }
    }

    /// Stops accepting and lets open requests finish (bounded by the request timeout).
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.sampler.abort();
        let _ = (&mut self.server).await;
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        self.sampler.abort();
        self.server.abort();
    }
}
