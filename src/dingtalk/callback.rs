//! HTTP callback mode (docs/dingtalk-protocol.md §6): an axum server on `http_listen` that accepts
//! DingTalk's POSTs on any path, verifies `timestamp` + `sign` against the app secret, and hands
//! the body (plain §2 JSON) to [`Ingress`].
//!
//! Invariants: an unsigned, badly signed or stale (> 1 h) request is refused with 401 and
//! never reaches the bot; a (timestamp, sign) pair already used is refused with 409 (see
//! [`replay`](super::replay)), and a pair is consumed only when its message was stored
//! (a 503 or any earlier failure releases it, so DingTalk's identical retry is admitted;
//! see [`HeldPair`]); a message is answered 200 only once it is durable (503 when
//! it could not be stored, so DingTalk may send it again); the listener runs under
//! [`ListenLimits`] (header, idle and request timeouts, a connection cap).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use super::error::ChannelStartError;
use super::ingress::Ingress;
use super::message::{parse_robot_message_str, ParseError};
use super::replay::{ReplayGuard, ReplayRefusal, REPLAY_CAPACITY};
use super::sign::verify_callback_sign;
use crate::listen::http::serve_http;
use crate::listen::ListenLimits;

struct Ctx {
    secret: String,
    ingress: Arc<Ingress>,
    replay: Mutex<ReplayGuard>,
}

/// The callback router (exposed for tests).
pub fn router(secret: String, ingress: Arc<Ingress>, replay: ReplayGuard) -> Router {
    Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(Arc::new(Ctx {
            secret,
            ingress,
            replay: Mutex::new(replay),
        }))
}

/// The replay guard: recorded in `file` (reloading what it holds) when given.
pub fn replay_guard(file: Option<&std::path::Path>) -> Result<ReplayGuard, ChannelStartError> {
    match file {
        None => Ok(ReplayGuard::new(REPLAY_CAPACITY)),
        Some(path) => ReplayGuard::with_file(REPLAY_CAPACITY, path, crate::clock::now_ms())
            .map_err(|source| ChannelStartError::ReplayRecord {
                path: path.to_path_buf(),
                source,
            }),
    }
}

/// Binds `listen` and serves under `limits` until `shutdown` turns true. Returns the bound
/// address.
pub async fn serve(
    listen: &str,
    secret: String,
    ingress: Arc<Ingress>,
    replay: ReplayGuard,
    limits: ListenLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), ChannelStartError> {
    let (listener, addr) = crate::listen::bind_tcp("channel.dingtalk.http_listen", listen).await?;
    let app = router(secret, ingress, replay);
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        serve_http("dingtalk-callback", listener, app, limits, stop).await;
    });
    Ok((addr, task))
}

fn refuse(status: StatusCode, errmsg: String) -> Response {
    let body = Json(json!({"errcode": status.as_u16(), "errmsg": errmsg}));
    (status, body).into_response()
}

async fn handle(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let now = crate::clock::now_ms();
    let timestamp = match verify_callback_sign(h("timestamp"), h("sign"), &ctx.secret, now) {
        Ok(ts) => ts,
        Err(e) => {
            tracing::warn!(reason = %e, "refused a DingTalk callback");
            return refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    let sign = h("sign").unwrap_or_default().trim();
    let admitted = lock_replay(&ctx).admit(timestamp, sign, now);
    if let Err(e) = admitted {
        tracing::warn!(reason = %e, "refused a DingTalk callback");
        let status = match e {
            ReplayRefusal::Replayed => StatusCode::CONFLICT,
            ReplayRefusal::Full(_) | ReplayRefusal::Unrecorded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        return refuse(status, e.to_string());
    }
    let held = HeldPair {
        ctx: &ctx,
        sign: Some(sign),
    };
    let parsed = match std::str::from_utf8(&body) {
        Ok(text) => parse_robot_message_str(text, crate::clock::now_ms()),
        Err(_) => Err(ParseError::NotJson("not UTF-8".into())),
    };
    if let Err(ParseError::NotJson(_)) = parsed {
        return refuse(StatusCode::BAD_REQUEST, "body is not JSON".into());
    }
    if ctx.ingress.admit(None, parsed).await {
        held.consume();
        Json(json!({})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"errcode": 503, "errmsg": "message not stored; send it again"})),
        )
            .into_response()
    }
}

fn lock_replay(ctx: &Ctx) -> std::sync::MutexGuard<'_, ReplayGuard> {
    ctx.replay.lock().unwrap_or_else(|p| p.into_inner())
}

/// A (timestamp, sign) pair admitted for the callback being handled. Dropped without
/// [`HeldPair::consume`] (a 503, a bad body, the request cancelled) it is released, so
/// the same pair may be sent again; only a stored message uses it up.
struct HeldPair<'a> {
    ctx: &'a Ctx,
    sign: Option<&'a str>,
}

impl HeldPair<'_> {
    /// The message was stored: the pair stays used until it expires.
    fn consume(mut self) {
        self.sign = None;
    }
}

impl Drop for HeldPair<'_> {
    fn drop(&mut self) {
        if let Some(sign) = self.sign.take() {
            lock_replay(self.ctx).release(sign);
        }
    }
}
