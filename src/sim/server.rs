//! Assembles the simulator's routes (the DingTalk endpoints the bot calls,
//! docs/dingtalk-protocol.md §9; the admin API; the demo model at `/demo/v1`) and runs them on a
//! loopback listener under the shared [`ListenLimits`] (header, idle and request timeouts, a
//! connection cap).

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, put};
use axum::Router;
use tokio::sync::watch;

use super::state::{Sim, SimOptions};
use super::{admin, admin_token, cards, gateway, openapi, webhooks};
use crate::listen::http::serve_http;
use crate::listen::{BindError, ListenLimits};

/// A running simulator.
pub struct SimServer {
    pub sim: Arc<Sim>,
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    pub fn base_url(&self) -> &str {
        &self.sim.base_url
    }

    /// Binds `opts.listen` and serves in the background.
    pub async fn start(opts: SimOptions) -> Result<SimServer, BindError> {
        let (listener, addr) = crate::listen::bind_tcp("sim", &opts.listen).await?;
        let sim = Arc::new(Sim::new(opts, format!("http://{addr}")));
        let app = router(sim.clone());
        let (stop, mut rx) = watch::channel(false);
        if let Some(ms) = sim.opts.redeliver_unacked_ms {
            let (s, mut rx2) = (sim.clone(), rx.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = gateway::redeliver_loop(s, Duration::from_millis(ms)) => {}
                    _ = rx2.wait_for(|v| *v) => {}
                }
            });
        }
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            serve_http("sim", listener, app, ListenLimits::http_default(), shutdown).await;
        });
        Ok(SimServer {
            sim,
            addr,
            stop,
            task,
        })
    }

    /// Stops serving and closes every WebSocket (their tasks end with the server).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for c in self.sim.lock().conns.values_mut() {
            c.tx = None;
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    let guard = axum::middleware::from_fn_with_state(sim.clone(), admin_token::require);
    Router::new()
        .route("/v1.0/gateway/connections/open", post(gateway::open))
        .route("/connect", get(gateway::connect))
        .route("/v1.0/oauth2/accessToken", post(openapi::access_token))
        .route("/robot/sendBySession", post(webhooks::send_by_session))
        .route("/robot/send", post(webhooks::robot_send))
        .route("/v1.0/robot/groupMessages/send", post(openapi::group_send))
        .route(
            "/v1.0/robot/oToMessages/batchSend",
            post(openapi::batch_send),
        )
        .route("/v1.0/card/instances", put(cards::update_instance))
        .route(
            "/v1.0/card/instances/createAndDeliver",
            post(cards::create_and_deliver),
        )
        .route("/v1.0/card/streaming", put(cards::streaming))
        .route("/_sim/health", get(admin::health))
        .merge(admin_routes().route_layer(guard))
        .with_state(sim)
        .nest("/demo/v1", crate::model::demo::router())
}

/// The admin API (`/_sim/...` but health), behind [`admin_token::require`].
fn admin_routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/messages", post(admin::inject).get(admin::messages))
        .route("/_sim/messages/{id}/redeliver", post(admin::redeliver))
        .route("/_sim/outbox", get(admin::outbox))
        .route("/_sim/acks", get(admin::acks))
        .route("/_sim/connections", get(admin::connections))
        .route(
            "/_sim/connections/{id}/{action}",
            post(admin::connection_action),
        )
        .route(
            "/_sim/faults",
            get(admin::faults_get)
                .post(admin::faults_set)
                .delete(admin::faults_clear),
        )
        .route("/_sim/cards", get(admin::cards))
        .route("/_sim/tokens", get(admin::tokens))
        .route("/_sim/sessions/expire", post(admin::expire_sessions))
        .route("/_sim/robots", post(admin::add_robot))
}
