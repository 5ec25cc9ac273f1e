//! DingTalk's send rate counted for all replicas together (`state.backend: redis`): the
//! robot window and each conversation's window are sorted sets in Redis, on Redis's clock.
//!
//! Same rule as the local [`super::limiter::SendLimiter`]: a send holds its place from
//! its start until it completes, and the place then counts for one window from the
//! completion. In Redis a place is a member scored by the time it stops counting minus
//! the window: `now + hold` while the send runs (so a replica that dies mid-send frees its
//! place `hold + window` later), the completion time once done. A Lua script counts both
//! windows and takes a place in both at once, only when both have room, so neither window
//! ever holds more than its limit, whatever the number of replicas.
//!
//! Times are Redis's `TIME` to the microsecond (as fractional ms): a place comes free a
//! full window after its send completed, never a rounding error earlier.
//!
//! Redis unreachable: no place is given (fail closed); the send waits and is given up at
//! its deadline like any send that found no slot (the reply is then retried later).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::limiter::NoSendSlot;
use crate::state::redis::{RedisError, RedisState};

/// The counting window: DingTalk's 1 s.
const WINDOW_MS: u64 = 1_000;
/// The longest sleep between two tries (a place may come free before the computed wait:
/// a running send that completes early, or one given up).
const MAX_NAP: Duration = Duration::from_millis(100);
/// The shortest sleep between two tries.
const MIN_NAP: Duration = Duration::from_millis(5);
/// Most tries of one acquire (with naps of at least [`MIN_NAP`], far beyond any deadline).
const MAX_TRIES: usize = 10_000;

/// KEYS: robot window, conversation window. ARGV: place id, per robot, per conversation,
/// window ms, hold ms. Returns 0 when the place was taken in both, else the ms until the
/// fuller window's oldest place stops counting.
const TAKE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = tonumber(ARGV[4])
local wait = 0
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[i + 1]) then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
    if wait < 1 then wait = 1 end
  end
end
if wait > 0 then return wait end
local hold = tonumber(ARGV[5])
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now + hold, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], hold + window)
end
return 0
"#;

/// KEYS: robot window, conversation window. ARGV: place id, window ms. The send
/// completed: its place counts one window from now.
const DONE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], 'XX', now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]) * 2)
end
return 1
"#;

/// The send-rate windows in Redis for one robot.
pub(crate) struct SharedSendRate {
    redis: RedisState,
    robot_key: String,
    client_id: String,
    per_robot: usize,
    per_conversation: usize,
    next_place: AtomicU64,
}

/// A place in both windows, held until the send completed.
pub(crate) struct SharedPlace {
    redis: RedisState,
    keys: [String; 2],
    id: String,
}

impl SharedSendRate {
    pub(crate) fn new(
        redis: RedisState,
        client_id: &str,
        per_robot: usize,
        per_conversation: usize,
    ) -> SharedSendRate {
        SharedSendRate {
            robot_key: redis.key(&["dingtalk", client_id, "sends"]),
            client_id: client_id.to_string(),
            redis,
            per_robot: per_robot.max(1),
            per_conversation: per_conversation.max(1),
            next_place: AtomicU64::new(0),
        }
    }

    /// Waits for a place into `conversation` until `deadline` (see the module).
    pub(crate) async fn acquire(
        &self,
        conversation: &str,
        deadline: Instant,
    ) -> Result<SharedPlace, NoSendSlot> {
        let keys = [
            self.robot_key.clone(),
            self.redis
                .key(&["dingtalk", &self.client_id, "sends", conversation]),
        ];
        let id = format!(
            "{}:{}",
            self.redis.replica_id(),
            self.next_place.fetch_add(1, Ordering::Relaxed)
        );
        let mut warned = false;
        for _ in 0..MAX_TRIES {
            let nap = match self.take(&keys, &id).await {
                Ok(0) => {
                    return Ok(SharedPlace {
                        redis: self.redis.clone(),
                        keys,
                        id,
                    })
                }
                Ok(wait_ms) => Duration::from_millis(wait_ms).clamp(MIN_NAP, MAX_NAP),
                Err(e) => {
                    if !warned {
                        warned = true;
                        tracing::warn!(error = %e, "cannot count a send in the shared rate; waiting (fail closed)");
                    }
                    MAX_NAP
                }
            };
            if Instant::now() + nap > deadline {
                return Err(NoSendSlot);
            }
            tokio::time::sleep(nap).await;
        }
        Err(NoSendSlot)
    }

    async fn take(&self, keys: &[String; 2], id: &str) -> Result<u64, RedisError> {
        Script::new(TAKE_LUA)
            .key(&keys[0])
            .key(&keys[1])
            .arg(id)
            .arg(self.per_robot)
            .arg(self.per_conversation)
            .arg(WINDOW_MS)
            .arg(self.redis.lease().as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))
    }
}

impl Drop for SharedPlace {
    fn drop(&mut self) {
        let (redis, keys, id) = (
            self.redis.clone(),
            std::mem::take(&mut self.keys),
            std::mem::take(&mut self.id),
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let done: Result<u8, _> = Script::new(DONE_LUA)
                .key(&keys[0])
                .key(&keys[1])
                .arg(&id)
                .arg(WINDOW_MS)
                .invoke_async(&mut redis.conn())
                .await;
            if let Err(e) = done {
                // The place then counts until its hold ends: later, never earlier.
                tracing::debug!(error = %redis.error(e), "cannot mark a send completed in the shared rate");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RedisConfig, Secret};
    use clawdbot_testkit::redis_server::RedisServer;
    use std::sync::Arc;

    async fn rate(url: &str, replica: &str, per_robot: usize, per_conv: usize) -> SharedSendRate {
        let redis = RedisState::connect(&RedisConfig {
            url: Secret::new(url),
            key_prefix: "t".into(),
            replica_id: Some(replica.into()),
            lease_ms: 1_500,
        })
        .await
        .expect("connect");
        SharedSendRate::new(redis, "app", per_robot, per_conv)
    }

    /// The most of `times` inside any half-open 1 s interval.
    fn busiest_second(times: &mut [std::time::Instant]) -> usize {
        times.sort();
        (0..times.len())
            .map(|i| {
                let first = times[i];
                times[i..]
                    .iter()
                    .take_while(|t| **t - first < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// 3 replicas send 12 messages at once (per_robot 4, per_conversation 2): the
    /// completions of all of them together never pass 4 in a sliding second, nor 2 in one
    /// conversation; a place whose replica died (never marked completed) frees after its
    /// hold and a window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn replicas_together_stay_within_the_robot_and_conversation_rates() {
        let server = RedisServer::start();
        let mut sends = Vec::new();
        for r in 0..3 {
            let limiter = Arc::new(rate(&server.url(), &format!("r{r}"), 4, 2).await);
            for i in 0..4 {
                let limiter = limiter.clone();
                sends.push(tokio::spawn(async move {
                    let conversation = format!("c{}", i % 2);
                    let far = Instant::now() + Duration::from_secs(60);
                    let place = limiter.acquire(&conversation, far).await.expect("place");
                    let done = std::time::Instant::now();
                    drop(place);
                    (conversation, done)
                }));
            }
        }
        let (mut all, mut c0) = (Vec::new(), Vec::new());
        for s in sends {
            let (conversation, done) = s.await.expect("send");
            all.push(done);
            if conversation == "c0" {
                c0.push(done);
            }
        }
        assert_eq!(
            busiest_second(&mut all),
            4,
            "robot rate, all replicas together"
        );
        assert_eq!(busiest_second(&mut c0), 2, "conversation rate");

        // A replica takes a place and dies before its send completes.
        let dead = rate(&server.url(), "dead", 1, 1).await;
        let live = rate(&server.url(), "live", 1, 1).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await; // the flood's window ends
        std::mem::forget(dead.acquire("x", Instant::now()).await.expect("free place"));
        let asked = std::time::Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        drop(live.acquire("x", far).await.expect("the place frees"));
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(2_000),
            "hold 1.5 s + window 1 s: {waited:?}"
        );
    }
}
