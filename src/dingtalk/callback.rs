//! HTTP callback mode (spec §6): an axum server on `http_listen` that accepts DingTalk's
//! POSTs on any path, verifies `timestamp` + `sign` against the app secret, and hands the
//! body (plain §2 JSON) to [`Ingress`].
//!
//! Invariants: an unsigned, badly signed or stale (> 1 h) request is refused with 401 and
//! never reaches the bot; a message is answered 200 only once it is durable (503 when it
//! could not be stored, so DingTalk may send it again).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::ingress::Ingress;
use super::sign::verify_callback_sign;

struct Ctx {
    secret: String,
    ingress: Arc<Ingress>,
}

/// The callback router (exposed for tests).
pub fn router(secret: String, ingress: Arc<Ingress>) -> Router {
    Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(Arc::new(Ctx { secret, ingress }))
}

/// Binds `listen` and serves until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    listen: &str,
    secret: String,
    ingress: Arc<Ingress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen for DingTalk callbacks on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("callback listener on {listen}: {e}"))?;
    let app = router(secret, ingress);
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "DingTalk callback server failed");
        }
    });
    Ok((addr, task))
}

async fn handle(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    if let Err(e) = verify_callback_sign(h("timestamp"), h("sign"), &ctx.secret, super::now_ms()) {
        tracing::warn!(reason = %e, "refused a DingTalk callback");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errcode": 401, "errmsg": e.to_string()})),
        )
            .into_response();
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errcode": 400, "errmsg": "body is not JSON"})),
            )
                .into_response()
        }
    };
    if ctx.ingress.admit(None, &payload).await {
        Json(json!({})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"errcode": 503, "errmsg": "message not stored; send it again"})),
        )
            .into_response()
    }
}
