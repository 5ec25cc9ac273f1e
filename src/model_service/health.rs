//! The model service's health URL: a small HTTP GET, polled in the background and run live for
//! `healthcheck`.
//!
//! "Healthy" means a 2xx answer within the timeout: llama.cpp's `/health` answers 503
//! while the model loads, vLLM's `/health` 200 once it serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};

use super::state::ModelServiceState;
use crate::redact_url::redact_url;

/// Pause between background polls.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Time budget of one background poll.
pub(crate) const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Result of one GET.
#[derive(Debug, Clone)]
pub(crate) struct ProbeResult {
    pub(crate) healthy: bool,
    /// One line: status and latency, or the error.
    pub(crate) detail: String,
    /// A one-line fix when not healthy.
    pub(crate) fix: Option<String>,
}

/// A health URL and the HTTP client that probes it.
#[derive(Debug, Clone)]
pub(crate) struct HealthProbe {
    url: Url,
    /// The URL as it may be shown (user-info password masked).
    shown: String,
    client: Client,
}

/// `url::ParseError`, named through `reqwest` (which does not re-export it) rather than
/// adding the `url` crate as a direct dependency.
type UrlParseError = <Url as std::str::FromStr>::Err;

/// A `--health-url` that cannot be polled. `shown` is the URL with secrets masked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthUrlError {
    #[error("--health-url {shown:?} is not a URL: {source}")]
    NotUrl {
        shown: String,
        source: UrlParseError,
    },
    #[error("--health-url {shown:?}: only http:// and https:// URLs can be polled")]
    Scheme { shown: String },
    #[error("cannot build the health check HTTP client: {0}")]
    Client(reqwest::Error),
}

impl From<HealthUrlError> for crate::exit::CliError {
    fn from(e: HealthUrlError) -> Self {
        crate::exit::CliError::usage(e.to_string())
    }
}

impl HealthProbe {
    /// Checks the URL (http or https only) and builds a client that ignores proxy
    /// variables: the runtime is supervised on this host, so a proxy would only lie.
    pub(crate) fn new(url: &str) -> Result<HealthProbe, HealthUrlError> {
        let shown = redact_url(url).into_owned();
        let parsed = match Url::parse(url) {
            Ok(u) => u,
            Err(source) => return Err(HealthUrlError::NotUrl { shown, source }),
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(HealthUrlError::Scheme { shown });
        }
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(HealthUrlError::Client)?;
        Ok(HealthProbe {
            url: parsed,
            shown,
            client,
        })
    }

    /// The URL as it may be shown (status, log): its user-info password masked.
    pub(crate) fn shown_url(&self) -> &str {
        &self.shown
    }

    /// One GET bounded by `limit`.
    pub(crate) async fn probe(&self, limit: Duration) -> ProbeResult {
        let started = Instant::now();
        let answer = self
            .client
            .get(self.url.clone())
            .timeout(limit)
            .send()
            .await;
        let ms = started.elapsed().as_millis();
        match answer {
            Ok(resp) if resp.status().is_success() => ProbeResult {
                healthy: true,
                detail: format!("GET {} -> {} in {ms} ms", self.shown, resp.status()),
                fix: None,
            },
            Ok(resp) => ProbeResult {
                healthy: false,
                detail: format!("GET {} -> {} in {ms} ms", self.shown, resp.status()),
                fix: Some(
                    "the runtime answers but is not ready: wait for the model to load, or read its output in \
                     the daemon log"
                        .into(),
                ),
            },
            Err(e) if e.is_timeout() => ProbeResult {
                healthy: false,
                detail: format!("GET {}: no answer within {} ms", self.shown, limit.as_millis()),
                fix: Some("the runtime is busy or wedged: check its load and its output in the daemon log".into()),
            },
            Err(e) => ProbeResult {
                healthy: false,
                detail: format!("GET {}: {}", self.shown, redact_url(&one_line(&e))),
                fix: Some(
                    "nothing answers there: check that --health-url matches the runtime's host and port, \
                     and read its output in the daemon log"
                        .into(),
                ),
            },
        }
    }

    /// Polls forever, storing each result in `state` and logging only changes.
    pub(crate) async fn poll(self, state: Arc<ModelServiceState>) {
        loop {
            let result = self.probe(POLL_TIMEOUT).await;
            let before = state.set_healthy(result.healthy);
            if before != Some(result.healthy) {
                if result.healthy {
                    tracing::info!(url = %self.shown, detail = %result.detail, "model service is healthy");
                } else {
                    tracing::warn!(url = %self.shown, detail = %result.detail, "model service is not healthy");
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// An error and its causes on one line (reqwest's top-level message alone says little).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_urls() {
        let not_url = HealthProbe::new("not a url").unwrap_err();
        assert!(matches!(not_url, HealthUrlError::NotUrl { .. }));
        assert!(not_url.to_string().contains("not a URL"));
        let ftp = HealthProbe::new("ftp://127.0.0.1/").unwrap_err();
        assert!(ftp.to_string().contains("only http"), "{ftp}");
        assert!(HealthProbe::new("http://127.0.0.1:8080/health").is_ok());
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy_with_a_fix() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let p = HealthProbe::new(&format!("http://127.0.0.1:{port}/health")).expect("url");
        let r = p.probe(Duration::from_secs(2)).await;
        assert!(!r.healthy && r.fix.is_some(), "{r:?}");
        assert!(!r.detail.contains('\n'));
    }
}
