//! The DingTalk access token shared by every replica (`state.backend: redis`): cached in
//! Redis with its lifetime as the key's expiry, and fetched by one replica at a time.
//!
//! A replica that finds no token takes the refresh lock (`SET NX PX`); the others wait for
//! the token to appear (polling every [`POLL`], at most [`LOCK`] in all, then they try the
//! lock themselves). A refused token is dropped only if it is still the cached one
//! (compare and delete), so a replica with an older copy cannot drop a fresh token.
//!
//! The token is a credential: it lives only in Redis and in memory, never in a log or an
//! error (errors name the server, see [`RedisState::error`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use super::error::ChannelError;
use super::token::IssuedToken;
use crate::state::redis::{RedisError, RedisState};

/// How long one replica may hold the refresh lock (a fetch is bounded by the HTTP
/// client's timeouts well below this).
const LOCK: Duration = Duration::from_secs(10);
/// How often a replica waiting for another's refresh looks for the token.
const POLL: Duration = Duration::from_millis(100);
/// Rounds of waiting and trying the lock: twice the lock's life in polls.
const MAX_ROUNDS: u32 = (2 * LOCK.as_millis() / POLL.as_millis()) as u32;

/// Returns {token, ms left} or {} when absent.
const READ_LUA: &str = r#"
local tok = redis.call('GET', KEYS[1])
if not tok then return {} end
return {tok, redis.call('PTTL', KEYS[1])}
"#;

/// KEYS: token, lock. ARGV: token, ms, lock owner. Stores the token and frees the lock
/// if this replica still holds it.
const STORE_LUA: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"#;

/// KEYS[1] = key, ARGV[1] = value: deletes the key only if it still holds the value.
const DELETE_IF_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Why the shared token could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedTokenError {
    /// Redis could not be asked: the caller fetches a token of its own.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// DingTalk refused or failed the fetch this replica made.
    #[error(transparent)]
    Fetch(ChannelError),
}

/// One app's token in Redis.
pub(crate) struct SharedToken {
    redis: RedisState,
    token_key: String,
    lock_key: String,
}

impl SharedToken {
    pub(crate) fn new(redis: RedisState, client_id: &str) -> SharedToken {
        SharedToken {
            token_key: redis.key(&["dingtalk", client_id, "token"]),
            lock_key: redis.key(&["dingtalk", client_id, "token-lock"]),
            redis,
        }
    }

    /// The cached token and how long it stays valid, or one `fetch`ed by this replica
    /// while it holds the refresh lock (then cached for all).
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<IssuedToken, SharedTokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<IssuedToken, ChannelError>>,
    {
        static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);
        let owner = format!(
            "{}:{}",
            self.redis.replica_id(),
            NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
        );
        for _ in 0..MAX_ROUNDS {
            if let Some(cached) = self.read().await? {
                return Ok(cached);
            }
            if self.lock(&owner).await? {
                // Another replica may have stored a token between our read and our lock.
                if let Some(cached) = self.read().await? {
                    self.delete_if(&self.lock_key, &owner).await?;
                    return Ok(cached);
                }
                let issued = match fetch().await {
                    Ok(issued) => issued,
                    Err(e) => {
                        self.delete_if(&self.lock_key, &owner).await?;
                        return Err(SharedTokenError::Fetch(e));
                    }
                };
                self.store(&issued, &owner).await?;
                return Ok(issued);
            }
            tokio::time::sleep(POLL).await;
        }
        // Another replica held the lock for two lock lives without storing a token:
        // fetch one of our own rather than wait on.
        fetch().await.map_err(SharedTokenError::Fetch)
    }

    /// Drops `stale` from Redis if it is still the cached token.
    pub(crate) async fn invalidate(&self, stale: &str) -> Result<(), RedisError> {
        self.delete_if(&self.token_key, stale).await
    }

    async fn read(&self) -> Result<Option<IssuedToken>, RedisError> {
        let found: Vec<redis::Value> = Script::new(READ_LUA)
            .key(&self.token_key)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        let (token, left): (String, i64) =
            match redis::from_redis_value(&redis::Value::Array(found)) {
                Ok(pair) => pair,
                Err(_) => return Ok(None),
            };
        // A key about to expire (or without expiry, which this module never writes) is
        // treated as absent.
        if left <= 0 {
            return Ok(None);
        }
        Ok(Some(IssuedToken {
            token,
            use_for: Duration::from_millis(left as u64),
        }))
    }

    async fn lock(&self, owner: &str) -> Result<bool, RedisError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.lock_key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(LOCK.as_millis() as u64)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok(taken.is_some())
    }

    async fn store(&self, issued: &IssuedToken, owner: &str) -> Result<(), RedisError> {
        let _: u8 = Script::new(STORE_LUA)
            .key(&self.token_key)
            .key(&self.lock_key)
            .arg(&issued.token)
            .arg(issued.use_for.as_millis().max(1) as u64)
            .arg(owner)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok(())
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<(), RedisError> {
        let _: u8 = Script::new(DELETE_IF_LUA)
            .key(key)
            .arg(value)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok(())
    }
}
