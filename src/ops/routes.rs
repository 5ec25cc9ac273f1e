//! The ops endpoint's routes and the JSON the status page draws.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::history::{History, SAMPLE_EVERY};
use super::DaemonView;
use super::{metrics, snapshot, Snapshot};

/// The status page: one self-contained HTML file (inline CSS and JS, no framework).
const STATUS_PAGE: &str = include_str!("status.html");

/// Content type of the OpenMetrics text exposition (Prometheus asks for it).
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4 (for everyone else).
const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) struct OpsState {
    control: Arc<dyn DaemonView>,
    registry: Registry,
    history: History,
}

impl OpsState {
    pub(crate) fn new(control: Arc<dyn DaemonView>) -> OpsState {
        let source = control.clone();
        OpsState {
            registry: metrics::registry(Arc::new(move || snapshot(source.as_ref()))),
            control,
            history: History::default(),
        }
    }
}

pub(crate) fn router(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/status.json", get(status_json))
        .with_state(state)
}

/// Records a load sample every [`SAMPLE_EVERY`] until aborted.
pub(crate) async fn sample_forever(state: Arc<OpsState>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = state.control.report();
        state.history.record(crate::clock::now_ms(), &report.models);
    }
}

async fn page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

/// Answered by the runtime that runs the bot's loops: if it serves this, it is alive.
async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<OpsState>>) -> Response {
    let snap = snapshot(state.control.as_ref());
    if snap.not_ready.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        let body = json!({ "status": "not ready", "reasons": snap.not_ready });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// OpenMetrics when the scraper accepts it (Prometheus does), else Prometheus text.
async fn prometheus(State(state): State<Arc<OpsState>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let encoded = if openmetrics {
        metrics::encode_openmetrics(&state.registry).map(|t| (OPENMETRICS_CONTENT_TYPE, t))
    } else {
        metrics::encode_prometheus_text(&state.registry).map(|t| (PROMETHEUS_TEXT_CONTENT_TYPE, t))
    };
    match encoded {
        Ok((content_type, text)) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn status_json(State(state): State<Arc<OpsState>>) -> Json<Value> {
    Json(status_document(
        &snapshot(state.control.as_ref()),
        &state.history,
        crate::clock::now_ms(),
    ))
}

/// Figures for the status page: states, counts and latencies only (no texts, no errors).
fn status_document(snap: &Snapshot, history: &History, now_ms: u64) -> Value {
    let r = &snap.report;
    let channel = r.channel.as_ref().map(|c| {
        json!({
            "state": c.state,
            "mode": c.mode,
            "reconnects": c.reconnects,
            "messages_in": c.messages_in,
            "messages_out": c.messages_out,
            "duplicates_dropped": c.duplicates_dropped,
            "send_failures": c.send_failures,
        })
    });
    let models: Vec<Value> = r
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "limit": m.limit,
                "in_flight": m.in_flight,
                "queued": m.queued,
                "served": m.served,
                "failures": m.failures,
                "timeouts": m.timeouts,
                "busy": m.busy_rejections,
                "p50_ms": m.p50_ms,
                "p95_ms": m.p95_ms,
            })
        })
        .collect();
    let replies: Vec<Value> = metrics::observed()
        .replies_by_outcome()
        .into_iter()
        .map(|(outcome, count)| json!({ "outcome": outcome, "count": count }))
        .collect();
    json!({
        "now_ms": now_ms,
        "version": r.version,
        "name": r.name,
        "workload": r.workload,
        "uptime_secs": r.uptime_secs,
        "ready": snap.not_ready.is_empty(),
        "not_ready": snap.not_ready,
        "inbox_pending": snap.inbox_pending,
        "channel": channel,
        "models": models,
        "replies": replies,
        "sample_every_secs": SAMPLE_EVERY.as_secs(),
        "history": history.samples(),
    })
}
