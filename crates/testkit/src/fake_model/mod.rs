//! A configurable fake OpenAI-compatible model server for tests and benchmarks.
//!
//! By default it answers `echo: <last user message>` at once, streamed or not, like the
//! product's demo model. [`router_with`] serves its routes driven by a [`FakeState`], so
//! tests and benchmarks can make the model slow, stall, break its stream or fail with any
//! status, and read what the server saw:
//!
//! - `POST {base}/chat/completions`, `GET {base}/models`, `GET {base}/health`;
//! - `GET {base}/_fake/stats`: [`FakeStats`] as JSON (requests, in flight, max in flight...);
//! - `POST {base}/_fake/config`: replace the [`FakeConfig`] (JSON body);
//! - `POST {base}/_fake/reset`: zero the counters.
//!
//! [`FakeServer::start`] runs it in-process on `127.0.0.1:0` under `/v1`.
//! Invariants: `in_flight` counts a chat request from arrival until its response body is
//! finished or the client went away, so `max_in_flight` is the true server-side peak; a
//! request holds its slot (and counts in `busy`) from the slot's grant to that same end.

mod behavior;
mod respond;
mod state;

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use behavior::{FakeBehavior, FakeConfig, FakeMode};
pub use state::{FakeState, FakeStats, SeenRequest, RECENT_REQUESTS};

/// The fake server's routes (relative to the base URL) driven by `state`.
pub fn router_with(state: FakeState) -> Router {
    Router::new()
        .route("/models", get(respond::models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/chat/completions", post(respond::complete))
        .route(
            "/_fake/stats",
            get(|State(s): State<FakeState>| async move { Json(s.stats()) }),
        )
        .route(
            "/_fake/config",
            post(
                |State(s): State<FakeState>, Json(c): Json<FakeConfig>| async move {
                    s.set_config(c);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_fake/reset",
            post(|State(s): State<FakeState>| async move {
                s.reset_stats();
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(state)
}

/// The fake server running in-process on an ephemeral loopback port; stops when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    pub state: FakeState,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves [`router_with`] under `/v1`. Needs a tokio runtime.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeServer> {
        let state = FakeState::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().nest("/v1", router_with(state.clone()));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(without_nagle(listener), app).await {
                tracing::warn!(error = %e, "fake model server stopped");
            }
        });
        Ok(FakeServer {
            addr,
            base_url: format!("http://{addr}/v1"),
            state,
            task,
        })
    }
}

/// Sets `TCP_NODELAY` on every accepted connection. A streamed answer is many small
/// writes; with Nagle's algorithm each one after the first waits for the client's
/// delayed ACK (about 40 ms on Linux), which would add that much to every streamed turn.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    }
    listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream))
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
