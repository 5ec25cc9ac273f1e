//! Authenticated new-API calls (`api.dingtalk.com`, header `x-acs-dingtalk-access-token`).
//!
//! Invariants: every call passes the per-API [`QpsLimiter`] first; a 400
//! `InvalidAuthentication` drops the cached token and retries exactly once; a 403
//! QPS-limit answer waits 1 s and retries exactly once; a 504 (DingTalk's gateway gave up
//! after 3 s) waits [`GATEWAY_RETRY_DELAY`] and retries exactly once; any other failure is
//! returned. So one call makes at most four requests.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::error::ChannelError;
use super::http::{read_api_response, transport};
use super::limiter::QpsLimiter;
use super::token::TokenCache;

/// DingTalk's default per-app per-API limit.
pub const QPS_PER_API: usize = 20;

/// Back-off before the one retry of a call DingTalk answered 504.
pub const GATEWAY_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct OpenApi {
    http: reqwest::Client,
    base: String,
    pub tokens: TokenCache,
    limiter: QpsLimiter,
}

impl OpenApi {
    pub fn new(http: reqwest::Client, api_base: &str, app_key: &str, app_secret: &str) -> OpenApi {
        OpenApi {
            tokens: TokenCache::new(http.clone(), api_base, app_key, app_secret),
            http,
            base: api_base.trim_end_matches('/').to_string(),
            limiter: QpsLimiter::new(QPS_PER_API),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ChannelError> {
        self.call(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ChannelError> {
        self.call(Method::PUT, path, body).await
    }

    async fn call(&self, method: Method, path: &str, body: &Value) -> Result<Value, ChannelError> {
        let mut auth_retried = false;
        let mut qps_retried = false;
        let mut gateway_retried = false;
        loop {
            self.limiter.acquire(path).await;
            let token = self.tokens.get().await?;
            let resp = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("x-acs-dingtalk-access-token", &token)
                .header("Accept", "application/json")
                .json(body)
                .send()
                .await
                .map_err(|e| transport(path, e))?;
            match read_api_response(path, resp, &token).await {
                Err(ChannelError::Api {
                    status: 400, code, ..
                }) if code == "InvalidAuthentication" && !auth_retried => {
                    tracing::info!(api = path, "access token refused; refreshing once");
                    self.tokens.invalidate(&token).await;
                    auth_retried = true;
                }
                Err(ChannelError::Api { code, .. })
                    if code.starts_with("Forbidden.AccessDenied.Qps") && !qps_retried =>
                {
                    tracing::warn!(api = path, code = %code, "DingTalk throttled the call; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    qps_retried = true;
                }
                Err(ChannelError::Api { status: 504, .. }) if !gateway_retried => {
                    tracing::warn!(
                        api = path,
                        "DingTalk answered 504 (gateway timeout); retrying once"
                    );
                    tokio::time::sleep(GATEWAY_RETRY_DELAY).await;
                    gateway_retried = true;
                }
                other => return other,
            }
        }
    }
}
