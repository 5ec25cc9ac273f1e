//! One OpenAI-compatible endpoint: `POST {base_url}/chat/completions`, streamed (SSE) or
//! not, under a split time budget; and `GET` probes for health checks.
//!
//! Invariants: no await in here outlives the deadline passed in; a stream counts as
//! answered only after `[DONE]` or a `finish_reason`; keepalive comments never move a
//! deadline; prompt and answer text never reach a log or an error string.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{timeout_at, Instant};

use super::answer_cap::CappedText;
use super::budget::{CallDeadlines, PhaseBudgets};
use super::error::{ModelError, TimeoutPhase};
use super::sse::{SseDecoder, SseItem};
use super::types::ChatMessage;
use super::wire::{self, Completion};
use crate::config::{ModelConfig, Secret};

/// Largest non-streamed body accepted.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of an error body read for classification.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Why a health probe of a model failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A client for one runtime of a configured model (its `base_url`, or one of its
/// `replicas`). Cheap to clone (the HTTP pool is shared).
///
/// Invariant: the bearer key sent is the one in `api_key`, shared by every clone, so a key
/// rotated with [`ModelClient::set_api_key`] is used from the next request on.
#[derive(Clone)]
pub struct ModelClient {
    cfg: ModelConfig,
    /// The runtime this client talks to.
    base_url: String,
    /// `{base_url}/chat/completions`, parsed once (not per turn); `None` when it does not
    /// parse, and each request then fails naming why, as an unparsed one would.
    chat_url: Option<reqwest::Url>,
    budgets: PhaseBudgets,
    http: reqwest::Client,
    api_key: Arc<RwLock<Option<Secret>>>,
}

impl ModelClient {
    /// Fails only when the HTTP client cannot be built (no TLS backend): a
    /// [`ModelError::Connect`] that every turn to this model then reports.
    pub fn new(cfg: &ModelConfig, base_url: &str) -> Result<Self, ModelError> {
        let budgets = PhaseBudgets::from_config(cfg);
        // TCP_NODELAY, no redirects, a bounded idle pool: see crate::http_client.
        let http = crate::http_client::builder()
            .connect_timeout(budgets.connect)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ModelError::Connect(format!("cannot build the HTTP client: {e}")))?;
        Ok(ModelClient {
            cfg: cfg.clone(),
            base_url: base_url.to_string(),
            chat_url: reqwest::Url::parse(&super::endpoint_url::endpoint_url(
                base_url,
                "chat/completions",
            ))
            .ok(),
            budgets,
            http,
            api_key: Arc::new(RwLock::new(cfg.api_key.clone())),
        })
    }

    /// Replaces the bearer key for the requests that start from now on (config reload).
    pub(crate) fn set_api_key(&self, key: Option<Secret>) {
        *self.api_key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn budgets(&self) -> &PhaseBudgets {
        &self.budgets
    }

    /// The runtime's base URL (may hold a password: redact before showing).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        super::endpoint_url::endpoint_url(&self.base_url, path)
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &*self.api_key.read().unwrap_or_else(|p| p.into_inner()) {
            Some(key) if !key.is_empty() => req.bearer_auth(key.expose()),
            _ => req,
        }
    }

    /// Runs one chat completion that must end by `total_deadline`. `on_progress` gets the
    /// full text so far after every content chunk (once, at the end, when not streaming).
    /// An answer with no visible text is [`ModelError::EmptyAnswer`]. An answer reaching
    /// `max_answer_chars` is cut there (see [`super::answer_cap`]): the stream is not read
    /// further and the response is dropped, which closes the connection to the model.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        total_deadline: Instant,
        max_answer_chars: usize,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ModelError> {
        let deadlines = CallDeadlines::start(&self.budgets, total_deadline);
        let stream = self.cfg.stream;
        let body = wire::request_body(&self.cfg, messages, stream);
        let post = match &self.chat_url {
            Some(url) => self.http.post(url.clone()),
            None => self.http.post(self.url("chat/completions")),
        };
        let post = post
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let req = self.authorized(post);
        // A queued llama.cpp request sends no headers at all: when streaming, the headers
        // are the first sign of life and fall under the first-token budget.
        let (head_deadline, head_phase) = if stream {
            deadlines.next(None)
        } else {
            (deadlines.total, TimeoutPhase::Total)
        };
        let resp = match timeout_at(head_deadline, req.send()).await {
            Err(_) => return Err(ModelError::Timeout(head_phase)),
            Ok(Err(e)) => return Err(send_error(&e)),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp, MAX_ERROR_BODY_BYTES, deadlines.total)
                .await
                .unwrap_or_default();
            return Err(wire::classify_http_error(status.as_u16(), &body));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let is_sse = !matches!(content_type, Some(ct) if ct.contains("application/json"));
        let completion = if stream && is_sse {
            read_stream(resp, &deadlines, max_answer_chars, on_progress).await?
        } else {
            // Not streaming, or a server that ignored `stream: true` and sent JSON.
            let body = read_capped(resp, MAX_BODY_BYTES, deadlines.total)
                .await
                .map_err(|e| e.unwrap_or(ModelError::Timeout(TimeoutPhase::Total)))?;
            let mut c = wire::parse_completion(&body)?;
            let mut capped = CappedText::new(max_answer_chars);
            capped.push(&c.text);
            c.cut = capped.is_cut();
            c.text = capped.into_string();
            if !c.text.is_empty() {
                on_progress(&c.text);
            }
            c
        };
        if completion.text.trim().is_empty() {
            return Err(ModelError::EmptyAnswer);
        }
        Ok(completion)
    }

    /// Probes `health_url` (default `{base_url}/models`) once: the latency in ms of a 2xx
    /// answer, or why it failed.
    pub async fn probe(&self, timeout: Duration) -> Result<u64, ProbeError> {
        let url = self
            .cfg
            .health_url
            .clone()
            .unwrap_or_else(|| self.url("models"));
        let started = Instant::now();
        let req = self.authorized(self.http.get(url));
        match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => Err(ProbeError::NoAnswer(timeout)),
            Ok(Err(e)) => Err(send_error(&e).into()),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(started.elapsed().as_millis() as u64),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                let body = read_capped(resp, MAX_ERROR_BODY_BYTES, Instant::now() + timeout)
                    .await
                    .unwrap_or_default();
                Err(wire::classify_http_error(status, &body).into())
            }
        }
    }
}

/// Reads a streamed answer until `[DONE]`, or the end of the body after a
/// `finish_reason`, or the answer cap. Any other end is a broken stream.
///
/// The deadlines are checked before every read, not only while waiting: a server whose
/// chunks are always ready (so no read ever waits) still stops at the total deadline.
async fn read_stream(
    resp: reqwest::Response,
    deadlines: &CallDeadlines,
    max_answer_chars: usize,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, ModelError> {
    let mut body = resp.bytes_stream();
    let mut decoder = SseDecoder::new();
    let mut out = Completion::default();
    let mut text = CappedText::new(max_answer_chars);
    let mut last_data: Option<Instant> = None;
    let mut saw_data = false;
    let mut done = false;
    while !done {
        let (deadline, phase) = deadlines.next(last_data);
        if Instant::now() >= deadline {
            return Err(ModelError::Timeout(phase));
        }
        let items = match timeout_at(deadline, body.next()).await {
            Err(_) => return Err(ModelError::Timeout(phase)),
            Ok(None) => {
                let tail: Vec<SseItem> = decoder.finish().into_iter().collect();
                if tail.is_empty() {
                    break;
                }
                tail
            }
            Ok(Some(Err(e))) => {
                return Err(ModelError::Stream(format!(
                    "connection broke: {}",
                    error_chain(&e)
                )))
            }
            Ok(Some(Ok(bytes))) => decoder
                .feed(&bytes)
                .map_err(|e| ModelError::Stream(e.to_string()))?,
        };
        for item in items {
            let SseItem::Data(data) = item else { continue };
            saw_data = true;
            if data.trim() == "[DONE]" {
                done = true;
                break;
            }
            let delta = wire::parse_chunk(&data)?;
            if !delta.content.is_empty() {
                let room_left = text.push(&delta.content);
                on_progress(text.as_str());
                last_data = Some(Instant::now());
                if !room_left {
                    // Cut: dropping `body` on return closes the connection to the model.
                    out.text = text.into_string();
                    out.cut = true;
                    return Ok(out);
                }
            } else if last_data.is_some() {
                last_data = Some(Instant::now());
            }
            if delta.finish_reason.is_some() {
                out.finish_reason = delta.finish_reason;
            }
            out.usage = delta.usage.or(out.usage);
            out.model = delta.model.or(out.model.take());
        }
    }
    out.text = text.into_string();
    if !saw_data {
        return Err(ModelError::Empty);
    }
    if !done && out.finish_reason.is_none() {
        return Err(ModelError::Stream(
            "ended without [DONE] or finish_reason".into(),
        ));
    }
    Ok(out)
}

/// Reads at most `limit` bytes of a body before `deadline`. `Err(None)` on timeout.
async fn read_capped(
    resp: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Vec<u8>, Option<ModelError>> {
    use crate::http_client::CappedBodyError;
    match timeout_at(deadline, crate::http_client::read_capped(resp, limit)).await {
        Err(_) => Err(None),
        Ok(Ok(body)) => Ok(body),
        Ok(Err(CappedBodyError::TooLarge(limit))) => Err(Some(ModelError::Protocol(format!(
            "body larger than {limit} bytes"
        )))),
        Ok(Err(CappedBodyError::Broken(e))) => Err(Some(ModelError::Stream(format!(
            "connection broke: {}",
            error_chain(&e)
        )))),
    }
}

/// Maps a failed send (no response at all) to its class.
fn send_error(e: &reqwest::Error) -> ModelError {
    if e.is_connect() && e.is_timeout() {
        ModelError::Timeout(TimeoutPhase::Connect)
    } else if e.is_connect() {
        ModelError::Connect(error_chain(e))
    } else if e.is_timeout() {
        ModelError::Timeout(TimeoutPhase::FirstToken)
    } else {
        ModelError::Stream(format!("request failed: {}", error_chain(e)))
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than
/// reqwest's generic outer text. Holds no request data.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(src) = inner.source() {
        inner = src;
    }
    inner.to_string()
}
