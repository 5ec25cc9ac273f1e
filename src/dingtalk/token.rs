//! App access token (spec §4.1): `POST /v1.0/oauth2/accessToken`, cached and refreshed
//! 5 minutes before it expires. One fetch at a time (callers wait on the same fetch).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::error::ChannelError;
use super::http::{read_api_response, transport};

const API: &str = "/v1.0/oauth2/accessToken";
/// Refresh this long before DingTalk's stated expiry.
const REFRESH_EARLY: Duration = Duration::from_secs(300);

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
        let (tok, ttl) = self.fetch().await?;
        *cached = Some((
            tok.clone(),
            Instant::now() + ttl.saturating_sub(REFRESH_EARLY),
        ));
        Ok(tok)
    }

    /// Forgets `stale` (only if it is still the cached token) so the next `get` refetches.
    pub async fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == stale) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(String, Duration), ChannelError> {
        let resp = self
            .http
            .post(&self.url)
            .header("Accept", "application/json")
            .json(&json!({"appKey": self.app_key, "appSecret": self.app_secret}))
            .send()
            .await
            .map_err(|e| transport(API, e))?;
        let v: Value = read_api_response(API, resp).await?;
        let tok = v
            .get("accessToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ChannelError::Transport {
                api: API.into(),
                detail: "answer lacks accessToken".into(),
            })?;
        let secs = v.get("expireIn").and_then(Value::as_u64).unwrap_or(7_200);
        tracing::debug!(expire_in = secs, "fetched DingTalk access token");
        Ok((tok.to_string(), Duration::from_secs(secs)))
    }
}
