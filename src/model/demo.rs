//! The built-in demo model and a configurable fake OpenAI-compatible server.
//!
//! [`router`] is the quickstart echo endpoint (the simulator mounts it under `/demo/v1`):
//! it answers `echo: <last user message>` at once, streamed or not. [`router_with`] serves
//! the same routes driven by a [`FakeState`], so tests and benchmarks can make the model
//! slow, stall, break its stream or fail with any status, and read what the server saw:
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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What the fake model does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeMode {
    /// Answer `echo: <last user message>` (or `reply`).
    #[default]
    Echo,
    /// Answer `status` with `body` and `content_type`.
    Status,
    /// Stream: a content chunk, then `data: {"error":...}` and the end (no `[DONE]`).
    ErrorInStream,
    /// Never send a byte (not even headers), like a queued llama.cpp request.
    StallBeforeHeaders,
    /// Stream: a content chunk, then silence forever.
    StallMidStream,
    /// Stream: the role chunk, then only `: ping` comments every `ping_ms`, forever.
    PingForever,
    /// Stream: a content chunk, then the connection is aborted.
    DieMidStream,
    /// Stream: all content, then a clean end without `finish_reason` and `[DONE]`.
    EndWithoutDone,
    /// 200 with an empty body.
    Empty200,
    /// Answer JSON (non-streamed) even when asked to stream.
    JsonWhenStreaming,
}

/// How one model name behaves. Every delay is in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeBehavior {
    pub mode: FakeMode,
    /// Before the response headers.
    pub latency_ms: u64,
    /// Streamed: between the role chunk and the first content chunk (non-streamed: added
    /// to `latency_ms`).
    pub first_token_ms: u64,
    /// Streamed: between content chunks.
    pub chunk_interval_ms: u64,
    /// Characters per content chunk (at least 1).
    pub chunk_chars: usize,
    /// Streamed: send `: ping` comments this often while waiting.
    pub ping_ms: Option<u64>,
    /// Fixed answer instead of the echo.
    pub reply: Option<String>,
    /// Use `\r\n` line ends in the stream.
    pub crlf: bool,
    /// Stream the quirks real servers send: comments, a role-only chunk with null content,
    /// empty and null deltas, NUL and U+FFFD in content, and both usage-chunk shapes.
    pub quirks: bool,
    /// For `status` mode.
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Default for FakeBehavior {
    fn default() -> Self {
        FakeBehavior {
            mode: FakeMode::Echo,
            latency_ms: 0,
            first_token_ms: 0,
            chunk_interval_ms: 0,
            chunk_chars: 8,
            ping_ms: None,
            reply: None,
            crlf: false,
            quirks: false,
            status: 500,
            body: r#"{"error":{"message":"fake failure","type":"server_error","code":500}}"#.into(),
            content_type: "application/json".into(),
        }
    }
}

/// The whole fake server's configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    /// Behaviour for model names not in `per_model`.
    pub default: FakeBehavior,
    /// Behaviour by the request's `model` field.
    pub per_model: BTreeMap<String, FakeBehavior>,
    /// Server-side slots like llama.cpp `-np`: excess requests wait without a byte sent.
    pub slots: Option<usize>,
}

/// One request as the server saw it (test-only data: it holds the prompt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenRequest {
    pub model: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// What the server counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FakeStats {
    pub requests: u64,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Responses sent to the end.
    pub completed: u64,
    pub by_model: BTreeMap<String, u64>,
    /// The last [`RECENT_REQUESTS`] requests, oldest first.
    pub recent: VecDeque<SeenRequest>,
    /// Requests being served now: holding a slot (when `slots` is set), past the wait.
    pub busy: usize,
    /// The integral of `busy` over time, in slot-microseconds, up to when these stats were
    /// read: busy slot-time. Utilization over a window = its growth / (slots x window).
    pub busy_slot_us: u64,
    /// When `busy` last changed (to bring `busy_slot_us` up to date).
    #[serde(skip)]
    busy_since: Option<Instant>,
}

impl FakeStats {
    /// Adds the busy slot-time since the last change, up to `now`.
    fn settle_busy(&mut self, now: Instant) {
        if let Some(since) = self.busy_since {
            let us = now.saturating_duration_since(since).as_micros() as u64;
            self.busy_slot_us += self.busy as u64 * us;
        }
        self.busy_since = Some(now);
    }
}

/// Requests kept in [`FakeStats::recent`].
pub const RECENT_REQUESTS: usize = 64;

struct Shared {
    config: Mutex<FakeConfig>,
    stats: Mutex<FakeStats>,
    slots: Mutex<Option<Arc<Semaphore>>>,
}

/// The fake server's state; clone it to keep a handle for assertions.
#[derive(Clone)]
pub struct FakeState(Arc<Shared>);

impl Default for FakeState {
    fn default() -> Self {
        FakeState::new(FakeConfig::default())
    }
}

impl FakeState {
    pub fn new(config: FakeConfig) -> Self {
        let slots = config.slots.map(|n| Arc::new(Semaphore::new(n.max(1))));
        FakeState(Arc::new(Shared {
            config: Mutex::new(config),
            stats: Mutex::new(FakeStats::default()),
            slots: Mutex::new(slots),
        }))
    }

    pub fn set_config(&self, config: FakeConfig) {
        *lock(&self.0.slots) = config.slots.map(|n| Arc::new(Semaphore::new(n.max(1))));
        *lock(&self.0.config) = config;
    }

    /// Changes the behaviour of one model name.
    pub fn set_model(&self, model: &str, behavior: FakeBehavior) {
        lock(&self.0.config)
            .per_model
            .insert(model.to_string(), behavior);
    }

    /// A snapshot of the counters, with `busy_slot_us` brought up to now.
    pub fn stats(&self) -> FakeStats {
        let mut s = lock(&self.0.stats);
        s.settle_busy(Instant::now());
        s.clone()
    }

    pub fn reset_stats(&self) {
        let mut s = lock(&self.0.stats);
        let (in_flight, busy) = (s.in_flight, s.busy);
        *s = FakeStats {
            in_flight,
            max_in_flight: in_flight,
            busy,
            busy_since: Some(Instant::now()),
            ..FakeStats::default()
        };
    }

    fn behavior(&self, model: &str) -> FakeBehavior {
        let cfg = lock(&self.0.config);
        cfg.per_model.get(model).unwrap_or(&cfg.default).clone()
    }

    fn record(&self, seen: SeenRequest) {
        let mut s = lock(&self.0.stats);
        s.requests += 1;
        *s.by_model.entry(seen.model.clone()).or_default() += 1;
        if s.recent.len() == RECENT_REQUESTS {
            s.recent.pop_front();
        }
        s.recent.push_back(seen);
    }

    fn enter(&self) -> InFlight {
        let mut s = lock(&self.0.stats);
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight {
            state: self.clone(),
            completed: false,
            slot: None,
            busy: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one request in flight until dropped; once [`InFlight::serve`] ran it also holds
/// the request's slot (so a streamed answer keeps its slot until the stream ends) and
/// counts it as busy.
struct InFlight {
    state: FakeState,
    completed: bool,
    slot: Option<OwnedSemaphorePermit>,
    busy: bool,
}

impl InFlight {
    /// Waits for a server slot (when `slots` is set), then counts the request as busy.
    async fn serve(&mut self) {
        let slots = lock(&self.state.0.slots).clone();
        if let Some(sem) = slots {
            self.slot = sem.acquire_owned().await.ok();
        }
        let mut s = lock(&self.state.0.stats);
        s.settle_busy(Instant::now());
        s.busy += 1;
        self.busy = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.state.0.stats);
        s.in_flight = s.in_flight.saturating_sub(1);
        if self.completed {
            s.completed += 1;
        }
        if self.busy {
            s.settle_busy(Instant::now());
            s.busy = s.busy.saturating_sub(1);
        }
    }
}

/// The quickstart echo endpoint: routes relative to the OpenAI base URL.
pub fn router() -> Router {
    router_with(FakeState::default())
}

/// The fake server's routes (relative to the base URL) driven by `state`.
pub fn router_with(state: FakeState) -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/chat/completions", post(complete))
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

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "demo-echo", "object": "model", "owned_by": "clawdbot"}]}),
    )
}

async fn complete(State(state): State<FakeState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "bad JSON", "type": "invalid_request_error", "code": 400}})))
            .into_response();
    };
    let model = req["model"].as_str().unwrap_or("").to_string();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let last_user = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    state.record(SeenRequest {
        model: model.clone(),
        authorization,
        body: req,
    });
    let b = state.behavior(&model);
    let mut guard = state.enter();
    guard.serve().await;
    if b.mode == FakeMode::StallBeforeHeaders {
        std::future::pending::<()>().await;
    }
    sleep_ms(b.latency_ms).await;
    let text = b
        .reply
        .clone()
        .unwrap_or_else(|| format!("echo: {last_user}"));
    match b.mode {
        FakeMode::Status => {
            let status =
                StatusCode::from_u16(b.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            guard.completed = true;
            (
                status,
                [(header::CONTENT_TYPE, b.content_type.clone())],
                b.body.clone(),
            )
                .into_response()
        }
        FakeMode::Empty200 => {
            guard.completed = true;
            let ct = if stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            ([(header::CONTENT_TYPE, ct)], "").into_response()
        }
        _ if !stream || b.mode == FakeMode::JsonWhenStreaming => {
            sleep_ms(b.first_token_ms).await;
            guard.completed = true;
            Json(json!({
                "id": "fake", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }))
            .into_response()
        }
        _ => sse_response(script(&b, &model, &text), b.ping_ms, b.crlf, guard),
    }
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// One step of a streamed answer.
#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    /// A `data:` event.
    Data(String),
    /// A raw line (comments).
    Raw(String),
    /// Silence until the client leaves, with pings every so many ms when set.
    Forever(Option<u64>),
    /// Abort the connection.
    Abort,
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    json!({"id": "fake", "object": "chat.completion.chunk", "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

/// The events of a streamed answer for behaviour `b`.
fn script(b: &FakeBehavior, model: &str, text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    if b.quirks {
        steps.push(Step::Raw(": ping - 2026-01-01 00:00:00".into()));
    }
    steps.push(Step::Data(chunk(
        model,
        json!({"role": "assistant", "content": null}),
        None,
    )));
    if b.mode == FakeMode::PingForever {
        steps.push(Step::Forever(Some(b.ping_ms.unwrap_or(50))));
        return steps;
    }
    steps.push(Step::Wait(b.first_token_ms));
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars
        .chunks(b.chunk_chars.max(1))
        .map(|c| c.iter().collect())
        .collect();
    let broken = matches!(
        b.mode,
        FakeMode::ErrorInStream | FakeMode::StallMidStream | FakeMode::DieMidStream
    );
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            steps.push(Step::Wait(b.chunk_interval_ms));
        }
        steps.push(Step::Data(chunk(model, json!({"content": piece}), None)));
        if b.quirks && i == 0 {
            steps.push(Step::Raw(":".into()));
            steps.push(Step::Data(chunk(model, json!({"content": ""}), None)));
            steps.push(Step::Data(chunk(model, Value::Null, None)));
            steps.push(Step::Data(chunk(model, json!({"content": null}), None)));
        }
        if broken {
            break;
        }
    }
    match b.mode {
        FakeMode::ErrorInStream => {
            steps.push(Step::Data(
                json!({"error": {"message": "fake mid-stream failure", "type": "server_error", "code": 500}}).to_string(),
            ));
            return steps;
        }
        FakeMode::StallMidStream => {
            steps.push(Step::Forever(b.ping_ms));
            return steps;
        }
        FakeMode::DieMidStream => {
            steps.push(Step::Abort);
            return steps;
        }
        FakeMode::EndWithoutDone => return steps,
        _ => {}
    }
    if b.quirks {
        steps.push(Step::Data(chunk(
            model,
            json!({"content": "\u{0}\u{fffd}"}),
            None,
        )));
    }
    steps.push(Step::Data(chunk(model, json!({}), Some("stop"))));
    if b.quirks {
        let usage = json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8});
        steps.push(Step::Data(
            json!({"object": "chat.completion.chunk", "choices": [], "usage": usage}).to_string(),
        ));
        steps.push(Step::Data(
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}], "usage": usage}).to_string(),
        ));
    }
    steps.push(Step::Data("[DONE]".into()));
    steps
}

type Frame = Result<Bytes, std::io::Error>;

/// Streams `steps` as SSE; the in-flight guard lives until the stream ends or the client
/// goes away.
fn sse_response(steps: Vec<Step>, ping_ms: Option<u64>, crlf: bool, guard: InFlight) -> Response {
    let (tx, rx) = mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        // Move the whole guard in (not just the field the closure touches).
        let mut guard = guard;
        let nl = if crlf { "\r\n" } else { "\n" };
        let send = |tx: &mpsc::Sender<Frame>, s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        for step in steps {
            let ok = match step {
                Step::Data(d) => send(&tx, format!("data: {d}{nl}{nl}")).await,
                Step::Raw(r) => send(&tx, format!("{r}{nl}{nl}")).await,
                Step::Wait(ms) => wait_with_pings(&tx, ms, ping_ms, nl).await,
                Step::Forever(pings) => {
                    wait_with_pings(&tx, u64::MAX, pings, nl).await;
                    false
                }
                Step::Abort => {
                    let _ = tx
                        .send(Err(std::io::Error::other("fake server died")))
                        .await;
                    false
                }
            };
            if !ok {
                return;
            }
        }
        guard.completed = true;
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Waits `ms` (u64::MAX = until the client leaves), sending `: ping` comments every
/// `ping_ms`. False when the client went away.
async fn wait_with_pings(
    tx: &mpsc::Sender<Frame>,
    ms: u64,
    ping_ms: Option<u64>,
    nl: &str,
) -> bool {
    let end = (ms != u64::MAX).then(|| tokio::time::Instant::now() + Duration::from_millis(ms));
    loop {
        let now = tokio::time::Instant::now();
        if end.is_some_and(|e| now >= e) {
            return true;
        }
        let next_ping = ping_ms.map(|p| now + Duration::from_millis(p.max(1)));
        let wake = match (end, next_ping) {
            (Some(e), Some(p)) => Some(e.min(p)),
            (e, p) => e.or(p),
        };
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return false,
            _ = sleep => {
                if next_ping.is_some_and(|p| tokio::time::Instant::now() >= p)
                    && tx.send(Ok(Bytes::from(format!(": ping - fake{nl}{nl}")))).await.is_err()
                {
                    return false;
                }
            }
        }
    }
}
