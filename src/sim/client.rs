//! A small client of the admin API, used by `sim inject` / `sim outbox` and by tests.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A failed call to the simulator's admin API, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum SimClientError {
    #[error("sim {path}: {source}")]
    Transport {
        path: String,
        source: reqwest::Error,
    },
    #[error("sim {path}: answer is not JSON: {source}")]
    NotJson {
        path: String,
        source: reqwest::Error,
    },
    #[error("sim {path}: HTTP {status}: {body}")]
    Refused {
        path: String,
        status: reqwest::StatusCode,
        body: Value,
    },
    /// `last` says what the last try saw (in words: no internal debug text).
    #[error("timed out after {timeout:?} waiting on sim {path}; last: {last}")]
    TimedOut {
        path: String,
        timeout: Duration,
        last: String,
    },
}

impl From<SimClientError> for crate::exit::CliError {
    fn from(e: SimClientError) -> Self {
        use crate::exit::Code;
        use crate::exit::ErrorKind;
        // Unreachable is "cannot tell" (exit 4), as for a daemon that does not answer.
        let (code, kind) = match &e {
            SimClientError::Transport { .. } => (Code::Unknown, ErrorKind::Unreachable),
            SimClientError::NotJson { .. } => (Code::Failure, ErrorKind::Internal),
            SimClientError::Refused { .. } => (Code::Failure, ErrorKind::Refused),
            SimClientError::TimedOut { .. } => (Code::Failure, ErrorKind::Timeout),
        };
        crate::exit::CliError::new(code, e.to_string()).kind(kind)
    }
}

/// Talks to a running simulator at `base` (e.g. `http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct SimClient {
    base: String,
    http: reqwest::Client,
    /// The admin token sent as `Authorization: Bearer` (a simulator started with one).
    token: Option<String>,
}

/// Parses `--sim`: a URL (`http://127.0.0.1:PORT`), or a bare `HOST:PORT`, which gets
/// `http://` (what `sim serve` prints is a URL, but an operator often types the address).
/// Anything else is refused with what is wrong, not reqwest's "builder error".
pub(crate) fn parse_sim_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    let with_scheme = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        format!("{v:?} is not a simulator URL or HOST:PORT ({e}); e.g. http://127.0.0.1:PORT")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{v:?}: the simulator is reached over http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.port_or_known_default().is_none() || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{v:?} names no host; e.g. http://127.0.0.1:PORT"));
    }
    Ok(with_scheme)
}

impl SimClient {
    pub fn new(base: &str) -> SimClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        SimClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// The same client, sending `token` with every admin call.
    pub fn with_token(self, token: Option<String>) -> SimClient {
        SimClient { token, ..self }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, SimClientError> {
        let request = self.http.get(format!("{}{path}", self.base));
        let r = self.authorized(request).send().await;
        Self::read(path, r).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, SimClientError> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        let r = self.authorized(request).send().await;
        Self::read(path, r).await
    }

    async fn read(
        path: &str,
        r: reqwest::Result<reqwest::Response>,
    ) -> Result<Value, SimClientError> {
        let path = path.to_string();
        let r = match r {
            Ok(r) => r,
            Err(source) => return Err(SimClientError::Transport { path, source }),
        };
        let status = r.status();
        let body: Value = match r.json().await {
            Ok(v) => v,
            Err(source) => return Err(SimClientError::NotJson { path, source }),
        };
        if !status.is_success() {
            return Err(SimClientError::Refused { path, status, body });
        }
        Ok(body)
    }

    /// Injects a message (see `admin::inject` for the fields).
    pub async fn inject(&self, req: &Value) -> Result<Value, SimClientError> {
        self.post("/_sim/messages", req).await
    }

    pub async fn outbox(&self) -> Result<Vec<Value>, SimClientError> {
        let v = self.get("/_sim/outbox").await?;
        Ok(v["entries"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `path` every 25 ms until `pred` holds or `timeout` passes; returns the last value.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, SimClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get(path).await;
            if let Ok(v) = &v {
                if pred(v) {
                    return Ok(v.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(SimClientError::TimedOut {
                    path: path.to_string(),
                    timeout,
                    last: match &v {
                        Ok(_) => "it answered, without what was waited for".to_string(),
                        Err(e) => e.to_string(),
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the outbox holds at least `n` entries.
    pub async fn wait_outbox(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, SimClientError> {
        let v = self
            .wait_for("/_sim/outbox", timeout, |v| {
                v["entries"].as_array().is_some_and(|a| a.len() >= n)
            })
            .await?;
        Ok(v["entries"].as_array().cloned().unwrap_or_default())
    }

    pub async fn faults(&self, f: Value) -> Result<Value, SimClientError> {
        self.post("/_sim/faults", &f).await
    }

    /// Injects a text message with defaults.
    pub async fn inject_text(&self, text: &str, group: bool) -> Result<Value, SimClientError> {
        self.inject(
            &json!({"text": text, "conversation_type": if group { "group" } else { "direct" }}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::parse_sim_url;

    #[test]
    fn host_port_gets_http_and_nonsense_is_named() {
        assert_eq!(
            parse_sim_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(parse_sim_url("localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(parse_sim_url("http://h:2/").unwrap(), "http://h:2/");
        let e = parse_sim_url("ftp://h:2").unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e = parse_sim_url("127.0.0.1:notaport").unwrap_err();
        assert!(e.contains("not a simulator URL"), "{e}");
    }
}
