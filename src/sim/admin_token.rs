//! The admin API's guard: a simulator started with an admin token (`sim serve
//! --secret-file`, what `quickstart` runs) answers `/_sim/...` (but `/_sim/health`) only
//! to a request that carries it as `Authorization: Bearer TOKEN`, so another local user
//! who can reach the loopback port cannot inject messages or read the outbox. Without a
//! token (tests, a simulator started by hand) the API stays open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::state::Sim;

/// Middleware: passes a request on when the simulator has no admin token or the request
/// carries it; else 401 naming what is missing (never the token).
pub(crate) async fn require(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let Some(token) = sim.opts.admin_token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given)
            if crate::dingtalk::sign::constant_time_eq(given.as_bytes(), token.as_bytes()) =>
        {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "this simulator's admin API needs its token (Authorization: Bearer; the demo's is in its state folder, readable by its owner only)"})),
        )
            .into_response(),
    }
}
