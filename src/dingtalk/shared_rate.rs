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

use crate::state::redis::{RedisError, RedisState};

/// The counting window: DingTalk's 1 s.
const WINDOW_MS: u64 = 1_000;
/// The longest sleep between two tries (a place may come free before the computed wait:
/// a running send that completes early, or one given up).
const MAX_NAP: Duration = Duration::from_millis(100);
/// The shortest sleep between two tries.
const MIN_NAP: Duration = Duration::from_millis(5);
/// Most tries of one acquire (with naps of at least [`MIN_NAP`], far beyond any deadline).
pub(crate) const MAX_TRIES: usize = 10_000;
/// The nap after a try Redis did not answer (fail closed: no place meanwhile).
pub(crate) const UNREACHABLE_NAP: Duration = MAX_NAP;

/// KEYS: robot window, conversation window. ARGV: place id, per robot, per conversation,
/// window ms, hold ms, places to leave free in the conversation window (below its limit).
/// Returns 0 when the place was taken in both, else the ms until the fuller window's
/// oldest place stops counting.
const TAKE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = tonumber(ARGV[4])
local room = {tonumber(ARGV[2]), tonumber(ARGV[3]) - tonumber(ARGV[6])}
local wait = 0
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= room[i] then
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

    /// The sends allowed per second: robot-wide, and into one conversation.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.per_robot, self.per_conversation)
    }

    /// One try for a place into `conversation`, leaving `keep_free` places of its window
    /// free (at most its limit less one, so the window always gives one): the place, or
    /// how long to wait before the next try.
    pub(crate) async fn try_take(
        &self,
        conversation: &str,
        keep_free: usize,
    ) -> Result<Taken, RedisError> {
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
        let wait_ms: u64 = Script::new(TAKE_LUA)
            .key(&keys[0])
            .key(&keys[1])
            .arg(&id)
            .arg(self.per_robot)
            .arg(self.per_conversation)
            .arg(WINDOW_MS)
            .arg(self.redis.lease().as_millis() as u64)
            .arg(keep_free.min(self.per_conversation - 1))
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        if wait_ms > 0 {
            return Ok(Taken::Wait(
                Duration::from_millis(wait_ms).clamp(MIN_NAP, MAX_NAP),
            ));
        }
        Ok(Taken::Place(SharedPlace {
            redis: self.redis.clone(),
            keys,
            id,
        }))
    }
}

/// What one try for a place gave.
pub(crate) enum Taken {
    Place(SharedPlace),
    /// No room: try again after this long.
    Wait(Duration),
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
    use crate::dingtalk::limiter::{SendLimiter, SendPriority};
    use clawdbot_testkit::redis_server::RedisServer;
    use std::sync::Arc;
    use tokio::time::Instant;

    async fn rate(url: &str, replica: &str, per_robot: usize, per_conv: usize) -> SendLimiter {
        let redis = RedisState::connect(&RedisConfig {
            url: Secret::new(url),
            key_prefix: "t".into(),
            replica_id: Some(replica.into()),
            lease_ms: 1_500,
        })
        .await
        .expect("connect");
        SendLimiter::shared(SharedSendRate::new(redis, "app", per_robot, per_conv))
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
                    let place = limiter
                        .acquire(&conversation, far, SendPriority::Answer)
                        .await
                        .expect("place");
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
        let now = Instant::now();
        let place = dead.acquire("x", now, SendPriority::Answer).await;
        std::mem::forget(place.expect("free place"));
        let asked = std::time::Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        let place = live.acquire("x", far, SendPriority::Answer).await;
        drop(place.expect("the place frees"));
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(2_000),
            "hold 1.5 s + window 1 s: {waited:?}"
        );
    }

    /// A busy reply into `conversation` on its own task; when it got its slot.
    fn spawn_busy_reply(
        limiter: &Arc<SendLimiter>,
        conversation: &'static str,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<Instant> {
        let l = limiter.clone();
        tokio::spawn(async move {
            let slot = l.acquire(conversation, deadline, SendPriority::Yield).await;
            drop(slot.expect("busy reply"));
            Instant::now()
        })
    }

    /// The local priorities hold over the shared windows (per_conversation 2): a busy
    /// reply leaves the place an answer on its way needs and yields to an answer
    /// waiting, and busy replies that could not be sent in time are refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn busy_replies_keep_this_replicas_priorities_in_the_shared_rate() {
        let server = RedisServer::start();
        let limiter = Arc::new(rate(&server.url(), "r", 100, 2).await);
        let far = Instant::now() + Duration::from_secs(30);
        let coming = limiter.answer_coming("c");
        // One busy reply goes; a second would take the answer's place, so it waits.
        let first = limiter.acquire("c", far, SendPriority::Yield).await;
        drop(first.expect("a free place"));
        let asked = Instant::now();
        let busy = spawn_busy_reply(&limiter, "c", far);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !busy.is_finished(),
            "the busy reply took the answer's place"
        );
        // The answer finds its place at once, and the busy reply waits for the window.
        let slot = limiter
            .acquire("c", Instant::now(), SendPriority::Answer)
            .await;
        drop(slot.expect("the answer's place was kept"));
        drop(coming);
        let sent = busy.await.expect("task");
        assert!(
            sent - asked >= Duration::from_millis(900),
            "{:?}",
            sent - asked
        );

        // Window full (2 sends just now): an answer waiting goes before a busy reply
        // that waited longer.
        for _ in 0..2 {
            let slot = limiter.acquire("d", far, SendPriority::Answer).await;
            drop(slot.expect("a free place"));
        }
        let busy = spawn_busy_reply(&limiter, "d", far);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let slot = limiter.acquire("d", far, SendPriority::Answer).await;
        drop(slot.expect("answer"));
        let answered = Instant::now();
        let busy_sent = busy.await.expect("task");
        assert!(
            answered < busy_sent,
            "the busy reply went before the answer"
        );

        // Of 10 busy replies into a full window, one waits and the rest are refused at
        // once (the group is being told already).
        for _ in 0..2 {
            let slot = limiter.acquire("e", far, SendPriority::Answer).await;
            drop(slot.expect("a free place"));
        }
        let soon = Instant::now() + Duration::from_secs(2);
        let tries: Vec<_> = (0..10)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let got = l.acquire("e", soon, SendPriority::Yield).await.is_ok();
                    (got, asked.elapsed())
                })
            })
            .collect();
        let mut refused_at_once = 0;
        for t in tries {
            let (got, took) = t.await.expect("task");
            if !got && took < Duration::from_millis(500) {
                refused_at_once += 1;
            }
        }
        assert_eq!(refused_at_once, 9);
    }
}
