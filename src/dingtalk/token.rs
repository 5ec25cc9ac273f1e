//! App access token (docs/dingtalk-protocol.md §4.1): `POST /v1.0/oauth2/accessToken`, cached and
//! refreshed 5 minutes before it expires. One fetch at a time (callers wait on the same fetch).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::error::ChannelError;
use super::http::{api_answer, transport};

const API: &str = "/v1.0/oauth2/accessToken";
/// Refresh this long before DingTalk's stated expiry.
const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// The lifetime DingTalk documents for an app token (§4.1, §8), and the most believed: a
/// longer `expireIn` only makes the token refresh earlier than it had to.
const DOCUMENTED_LIFETIME: Duration = Duration::from_secs(7_200);

/// A token from a successful answer, and how long to use it before fetching a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    /// `expireIn` (or the documented lifetime when absent or unreadable), at most the
    /// documented lifetime, minus the early-refresh margin: always addable to a clock.
    pub use_for: Duration,
}

/// What a token answer (docs/dingtalk-protocol.md §4.1) means, from its HTTP status and
/// body alone: a non-empty `accessToken` and its bounded lifetime, or why not.
pub fn token_answer(status: u16, body: &str) -> Result<IssuedToken, ChannelError> {
    let v = api_answer(API, status, body)?;
    let token = v
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ChannelError::Transport {
            api: API.into(),
            detail: "answer lacks accessToken".into(),
        })?;
    let lifetime = v
        .get("expireIn")
        .and_then(Value::as_u64)
        .map_or(DOCUMENTED_LIFETIME, Duration::from_secs)
        .min(DOCUMENTED_LIFETIME);
    Ok(IssuedToken {
        token: token.to_string(),
        use_for: lifetime.saturating_sub(REFRESH_EARLY),
    })
}

pub struct TokenCache {
    http: reqwest::Client,
    url: String,
    app_key: String,
    app_secret: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        api_base: &str,
        app_key: &str,
        app_secret: &str,
    ) -> TokenCache {
        TokenCache {
            http,
            url: format!("{}{API}", api_base.trim_end_matches('/')),
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            cached: Mutex::new(None),
        }
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn get(&self) -> Result<String, ChannelError> {
        let mut cached = self.cached.lock().await;
        if let Some((tok, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(tok.clone());
            }
        }
        let issued = self.fetch().await?;
        *cached = Some((issued.token.clone(), Instant::now() + issued.use_for));
        Ok(issued.token)
    }

    /// Forgets `stale` (only if it is still the cached token) so the next `get` refetches.
    pub async fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == stale) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<IssuedToken, ChannelError> {
        let resp = self
            .http
            .post(&self.url)
            .header("Accept", "application/json")
            .json(&json!({"appKey": self.app_key, "appSecret": self.app_secret}))
            .send()
            .await
            .map_err(|e| transport(API, e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| transport(API, e))?;
        let issued = token_answer(status, &body)?;
        tracing::debug!(
            use_for_s = issued.use_for.as_secs(),
            "fetched DingTalk access token"
        );
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one fixed JSON answer at the token path on loopback; returns its base URL.
    async fn token_server(answer: Value) -> String {
        let app = axum::Router::new().route(
            API,
            axum::routing::post(move || async move { axum::Json(answer) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// An `expireIn` no clock can add (u64::MAX seconds) is a token to refresh soon, not a
    /// panic in the daemon.
    #[tokio::test]
    async fn an_absurd_token_lifetime_is_bounded_not_a_panic() {
        let base = token_server(json!({"accessToken": "tok", "expireIn": u64::MAX})).await;
        let cache = TokenCache::new(super::super::http::client(), &base, "key", "secret");
        assert_eq!(cache.get().await.unwrap(), "tok");
        assert_eq!(cache.get().await.unwrap(), "tok");
    }
}
