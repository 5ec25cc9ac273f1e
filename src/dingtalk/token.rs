//! App access token (docs/dingtalk-protocol.md §4.1): `POST /v1.0/oauth2/accessToken`, cached and
//! refreshed 5 minutes before it expires. One fetch at a time (callers wait on the same fetch);
//! with `state.backend: redis` one fetch at a time across all replicas, the token cached in
//! Redis ([`super::shared_token`]). Redis unreachable: this replica fetches its own token,
//! as a single daemon does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::error::ChannelError;
use super::http::{api_answer, read_answer, transport};
use super::shared_token::{SharedToken, SharedTokenError};
use crate::state::redis::RedisState;

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
/// body alone: a non-empty `accessToken` and its bounded lifetime, or why not (with
/// `app_secret`, which the call carried, masked in a refusal).
pub fn token_answer(
    status: u16,
    body: &str,
    app_secret: &str,
) -> Result<IssuedToken, ChannelError> {
    let v = api_answer(API, status, body, app_secret)?;
    let token = v
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ChannelError::Unreadable {
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
    /// The token shared by all replicas (`state.backend: redis`).
    shared: Option<SharedToken>,
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
            shared: None,
        }
    }

    /// Shares the token with every replica using `redis` (see the module).
    pub(crate) fn share(&mut self, redis: RedisState, app_key: &str) {
        self.shared = Some(SharedToken::new(redis, app_key));
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn get(&self) -> Result<String, ChannelError> {
        let mut cached = self.cached.lock().await;
        if let Some((tok, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(tok.clone());
            }
        }
        let issued = match &self.shared {
            None => self.fetch().await?,
            Some(shared) => match shared.get(|| self.fetch()).await {
                Ok(issued) => issued,
                Err(SharedTokenError::Fetch(e)) => return Err(e),
                Err(SharedTokenError::Redis(e)) => {
                    tracing::warn!(error = %e, "shared access token unavailable; fetching one for this replica");
                    self.fetch().await?
                }
            },
        };
        *cached = Some((issued.token.clone(), Instant::now() + issued.use_for));
        Ok(issued.token)
    }

    /// Forgets `stale` (only if it is still the cached token) so the next `get` refetches.
    pub async fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == stale) {
            *cached = None;
        }
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.invalidate(stale).await {
                tracing::warn!(error = %e, "cannot drop the refused access token from redis");
            }
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
        let (status, body) = read_answer(API, resp).await?;
        let issued = token_answer(status, &body, &self.app_secret)?;
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

    /// Serves tokens "tok1", "tok2"... at the token path, each answer after 200 ms;
    /// returns the base URL and the count of fetches.
    async fn counting_token_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let fetches = std::sync::Arc::new(AtomicUsize::new(0));
        let count = fetches.clone();
        let app = axum::Router::new().route(
            API,
            axum::routing::post(move || {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    axum::Json(json!({"accessToken": format!("tok{n}"), "expireIn": 7200}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), fetches)
    }

    /// Three replicas asking at once fetch one token (the others wait for it in Redis);
    /// a refused token is refetched once for all; with Redis gone each replica still
    /// gets a token of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn replicas_share_one_token_and_one_refresh() {
        use crate::config::{RedisConfig, Secret};
        use std::sync::atomic::Ordering;
        let mut server = clawdbot_testkit::redis_server::RedisServer::start();
        let (base, fetches) = counting_token_server().await;
        let mut caches = Vec::new();
        for r in 0..3 {
            let redis = RedisState::connect(&RedisConfig {
                url: Secret::new(server.url()),
                key_prefix: "t".into(),
                replica_id: Some(format!("r{r}")),
                lease_ms: 10_000,
            })
            .await
            .unwrap();
            let mut cache = TokenCache::new(super::super::http::client(), &base, "key", "secret");
            cache.share(redis, "key");
            caches.push(std::sync::Arc::new(cache));
        }
        let ask_all = |caches: &Vec<std::sync::Arc<TokenCache>>| {
            let tasks: Vec<_> = caches
                .iter()
                .flat_map(|c| std::iter::repeat_n(c.clone(), 4))
                .map(|c| tokio::spawn(async move { c.get().await.unwrap() }))
                .collect();
            async move {
                let mut got = Vec::new();
                for t in tasks {
                    got.push(t.await.unwrap());
                }
                got
            }
        };
        let got = ask_all(&caches).await;
        assert!(got.iter().all(|t| t == "tok1"), "{got:?}");
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one fetch for all replicas"
        );
        // DingTalk refuses tok1 on replica 0: the next asks of all fetch tok2 once.
        caches[0].invalidate("tok1").await;
        for c in &caches[1..] {
            c.invalidate("tok1").await;
        }
        let got = ask_all(&caches).await;
        assert!(got.iter().all(|t| t == "tok2"), "{got:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Redis gone: the replica fetches for itself.
        server.kill();
        caches[0].invalidate("tok2").await;
        assert_eq!(caches[0].get().await.unwrap(), "tok3");
    }
}
