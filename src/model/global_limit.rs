//! The per-model concurrency limit shared by every replica (`state.backend: redis`): one
//! global semaphore per model, made of leases in Redis.
//!
//! Each held slot is a member of the sorted set `{prefix}:model:{name}:leases`, scored by
//! the time its lease ends on Redis's own clock (`TIME`, never a replica's clock). Lua
//! scripts acquire, renew and release atomically; every script first drops the leases
//! that ended, so a dead replica's slots come back `lease_ms` after its last renewal.
//! Every change is published on `{prefix}:model:{name}:leases-changed` with the new
//! count: waiters of every replica wake on it (no busy loop) and status shows the count.
//! A waiter also retries every [`POLL`] as a safety net (a lost message, a lease that
//! simply ran out).
//!
//! Waiters of all replicas stand in one line, served round-robin across conversations as
//! the local [`super::limiter::Limiter`] serves them in one daemon: each waits with a
//! ticket in `{prefix}:model:{name}:queue` placed by round (a conversation's next ticket
//! goes one round after its previous one, a new conversation's into the round being
//! served) and by arrival within a round; a free slot goes to the first live tickets
//! only. A waiter refreshes its ticket on every try; the ticket of one that stopped
//! asking (dead replica) is dropped after [`TICKET_LIFE`] (or `lease_ms` if shorter).
//!
//! Invariants:
//! - the set never holds more than `limit` live leases: an acquire adds one only when
//!   fewer are live, and a renewal re-adds a lease that ran out only under that same rule;
//! - a holder renews every `lease_ms / 3` while its turn runs; when a renewal finds its
//!   lease gone and no room to take it back (this process was paused, or Redis
//!   unreachable, longer than the lease, or Redis lost its data, and another replica took
//!   the slot), the lease is *lost*: the turn's request is cancelled ([`Lease::lost`]) as
//!   soon as this process runs again. Leases cannot stop a frozen holder's request that
//!   is already at the model: for that while the model may serve `limit + 1`;
//! - Redis unreachable means no new lease (fail closed): waiters keep retrying until their
//!   wait budget ends and the turn gets the busy reply, as with a full local queue.
//!
//! Replicas may be configured with different limits for one model (a config not rolled
//! out everywhere, two bots on one `key_prefix`): every replica records its configured
//! limit in `{prefix}:model:{name}:limits` (renewed every third of the lease, dropped with
//! the replica) and uses the LOWEST live one, so a disagreement never lets the model run
//! above any replica's limit; it is logged as an error and shown in status.
//!
//! The router asks for the lease first and the local slot after it (which is then always
//! free: this replica holds at most `limit` leases). Taking the local slot first would
//! let each replica's local line decide which of its turns may enter the global one, so
//! a quiet conversation would wait behind its replica's share of a flood.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::state::outage_log::OutageLog;
use crate::state::redis::{RedisError, RedisState};

/// The safety-net retry of a waiter that heard no release.
const POLL: Duration = Duration::from_millis(250);
/// How long a waiter's ticket stays in line after its last try (it tries at least every
/// [`POLL`]): a dead replica's waiters stop holding up the line after this, not after a
/// whole lease.
const TICKET_LIFE: Duration = Duration::from_secs(2);
/// The shortest bound on one try, and the longest wait for leaving the line after a wait
/// ran out (Redis slow or down: the ticket then ends by itself after lease_ms).
const LEAVE_WAIT: Duration = Duration::from_millis(500);
/// The wait before resubscribing after the pub/sub connection failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// KEYS: leases, queue (ticket -> place), queue-alive (ticket -> expiry), sequence,
/// rounds (conversation -> its last round), round (the round last served).
/// ARGV: ticket, limit, lease ms, channel, conversation, ticket life ms.
/// Drops ended leases and tickets of waiters that stopped asking. On its first call a
/// ticket is placed in round max(served round, its conversation's last round + 1), after
/// the tickets already in that round (arrival order): each conversation gets one grant
/// per round, as the local round-robin does. Refreshes the ticket, and grants it a lease
/// when it is among the first `free` tickets. Returns {granted 0/1, live leases}.
const ACQUIRE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local per_round = 1048576
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, d in ipairs(dead) do
  redis.call('ZREM', KEYS[2], d)
  redis.call('ZREM', KEYS[3], d)
end
local served = tonumber(redis.call('GET', KEYS[6]) or '0')
local place = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not place then
  local round = served
  local last = redis.call('ZSCORE', KEYS[5], ARGV[5])
  if last and tonumber(last) + 1 > round then round = tonumber(last) + 1 end
  redis.call('ZADD', KEYS[5], round, ARGV[5])
  place = round * per_round + redis.call('INCR', KEYS[4]) % per_round
  redis.call('ZADD', KEYS[2], place, ARGV[1])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
for i = 2, 6 do redis.call('PEXPIRE', KEYS[i], lease) end
local n = redis.call('ZCARD', KEYS[1])
local free = tonumber(ARGV[2]) - n
if free <= 0 or redis.call('ZRANK', KEYS[2], ARGV[1]) >= free then return {0, n} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local round = math.floor(tonumber(place) / per_round)
if round > served then
  redis.call('SET', KEYS[6], round, 'PX', lease)
  -- A conversation whose last round is before the served one is placed like a new one.
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', round - 1)
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PUBLISH', ARGV[4], n + 1)
return {1, n + 1}
"#;

/// KEYS: queue, queue-alive. ARGV: ticket, channel. A waiter that gave up leaves the
/// line; the others are told (the head may have moved).
const LEAVE_LUA: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], -1)
return 1
"#;

/// Extends lease ARGV[1] to now + ARGV[3] ms; one that ended is taken back only when
/// fewer than ARGV[2] are live. Returns {still held 0/1, count}.
const RENEW_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if n >= tonumber(ARGV[2]) then return {0, n} end
  n = n + 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n}
"#;

/// Removes lease ARGV[1] (if still there) and ended leases; publishes the count on
/// ARGV[2] and returns it.
const RELEASE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
redis.call('PUBLISH', ARGV[2], n)
return n
"#;

/// KEYS: limits-alive (replica -> expiry), limits (replica -> limit). ARGV: replica id,
/// its configured limit, lease ms. Records this replica's limit, drops those of replicas
/// that stopped recording, returns {lowest, highest} live limit.
const LIMITS_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, d in ipairs(dead) do
  redis.call('ZREM', KEYS[1], d)
  redis.call('HDEL', KEYS[2], d)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local lowest, highest = tonumber(ARGV[2]), tonumber(ARGV[2])
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  local n = tonumber(v)
  if n < lowest then lowest = n end
  if n > highest then highest = n end
end
return {lowest, highest}
"#;

/// Removes ended leases and returns the live count.
const COUNT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"#;

/// One model's global semaphore. Share it with `Arc`.
pub(crate) struct GlobalLimit {
    redis: RedisState,
    leases_key: String,
    queue_key: String,
    queue_alive_key: String,
    sequence_key: String,
    rounds_key: String,
    round_key: String,
    channel: String,
    limits_alive_key: String,
    limits_key: String,
    /// This replica's configured limit.
    limit: usize,
    /// The lowest limit of the live replicas (this one's until they were read): the one
    /// the scripts enforce.
    lowest_live_limit: AtomicUsize,
    /// Set while the live replicas disagree on the limit (for status).
    conflict: std::sync::Mutex<Option<String>>,
    /// Woken on every published change and every local release.
    changed: Notify,
    /// The live count last seen in Redis (status and metrics).
    in_flight: AtomicUsize,
    /// Turns of this replica waiting in the line now.
    waiting_here: AtomicUsize,
    next_lease: AtomicU64,
}

impl GlobalLimit {
    pub(crate) fn new(redis: RedisState, model: &str, limit: usize) -> Arc<GlobalLimit> {
        Arc::new(GlobalLimit {
            leases_key: redis.key(&["model", model, "leases"]),
            queue_key: redis.key(&["model", model, "queue"]),
            queue_alive_key: redis.key(&["model", model, "queue-alive"]),
            sequence_key: redis.key(&["model", model, "queue-seq"]),
            rounds_key: redis.key(&["model", model, "queue-rounds"]),
            round_key: redis.key(&["model", model, "queue-round"]),
            channel: redis.key(&["model", model, "leases-changed"]),
            limits_alive_key: redis.key(&["model", model, "limits-alive"]),
            limits_key: redis.key(&["model", model, "limits"]),
            redis,
            limit: limit.max(1),
            lowest_live_limit: AtomicUsize::new(limit.max(1)),
            conflict: std::sync::Mutex::new(None),
            changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            waiting_here: AtomicUsize::new(0),
            next_lease: AtomicU64::new(0),
        })
    }

    /// Leases live across all replicas, as last seen.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Turns of this replica waiting in the line now.
    pub(crate) fn waiting_here(&self) -> usize {
        self.waiting_here.load(Ordering::Relaxed)
    }

    /// Waits in line for a global slot until `deadline`; `None` when none came free in
    /// time (or Redis could not be asked: fail closed). The lease is renewed until dropped.
    /// Dropping the future leaves the line.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        conversation: &str,
        deadline: Instant,
    ) -> Option<Lease> {
        self.waiting_here.fetch_add(1, Ordering::Relaxed);
        let mut ticket = Ticket {
            limit: self.clone(),
            id: format!(
                "{}:{}",
                self.redis.replica_id(),
                self.next_lease.fetch_add(1, Ordering::Relaxed)
            ),
            waiting: true,
        };
        let poll = POLL.min(self.redis.lease() / 4);
        let mut warned = false;
        // Bounded by `deadline`: every round waits for a change or `poll`.
        loop {
            // Registered before asking, so a release between the answer and the wait
            // still wakes this waiter.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Every try gets at least LEAVE_WAIT, so a deadline of "now" still asks once. A
            // try cut short may still have been granted in Redis: that lease ends by
            // itself after lease_ms (a slot idle that long, never one too many).
            let cut = deadline.max(Instant::now() + LEAVE_WAIT);
            let tried =
                tokio::time::timeout_at(cut, self.try_acquire(&ticket.id, conversation)).await;
            match tried.unwrap_or(Err(RedisError::TimedOut)) {
                Ok(true) => {
                    ticket.waiting = false;
                    return Some(Lease::start(self.clone(), std::mem::take(&mut ticket.id)));
                }
                Ok(false) => {}
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot take a global model slot; waiting (fail closed)");
                }
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                ticket.waiting = false;
                let left = tokio::time::timeout(LEAVE_WAIT, self.leave(&ticket.id)).await;
                if !matches!(left, Ok(Ok(()))) {
                    tracing::debug!(
                        "cannot leave the global model slot line; the ticket ends after lease_ms"
                    );
                }
                return None;
            }
            let until = deadline.min(now + poll);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn try_acquire(&self, member: &str, conversation: &str) -> Result<bool, RedisError> {
        let (granted, n): (u8, usize) = Script::new(ACQUIRE_LUA)
            .key(&self.leases_key)
            .key(&self.queue_key)
            .key(&self.queue_alive_key)
            .key(&self.sequence_key)
            .key(&self.rounds_key)
            .key(&self.round_key)
            .arg(member)
            .arg(self.enforced_limit())
            .arg(self.lease_ms())
            .arg(&self.channel)
            .arg(conversation)
            .arg(self.ticket_life().as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        Ok(granted == 1)
    }

    /// True while `member` still holds (or could take back) its slot.
    async fn renew(&self, member: &str) -> Result<bool, RedisError> {
        let (held, n): (u8, usize) = Script::new(RENEW_LUA)
            .key(&self.leases_key)
            .arg(member)
            .arg(self.enforced_limit())
            .arg(self.lease_ms())
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        Ok(held == 1)
    }

    async fn release(&self, member: &str) -> Result<(), RedisError> {
        let n: usize = Script::new(RELEASE_LUA)
            .key(&self.leases_key)
            .arg(member)
            .arg(&self.channel)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn leave(&self, ticket: &str) -> Result<(), RedisError> {
        let _: u8 = Script::new(LEAVE_LUA)
            .key(&self.queue_key)
            .key(&self.queue_alive_key)
            .arg(ticket)
            .arg(&self.channel)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        Ok(())
    }

    /// The limit the scripts enforce: this replica's, or a live replica's lower one.
    fn enforced_limit(&self) -> usize {
        self.limit
            .min(self.lowest_live_limit.load(Ordering::Relaxed))
            .max(1)
    }

    /// Set while the live replicas are configured with different limits for this model.
    pub(crate) fn conflict(&self) -> Option<String> {
        self.conflict
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records this replica's limit and reads the live replicas' lowest and highest;
    /// a disagreement is logged (once per change) and shown in [`GlobalLimit::conflict`].
    async fn record_limit(&self) -> Result<(), RedisError> {
        let (lowest, highest): (usize, usize) = Script::new(LIMITS_LUA)
            .key(&self.limits_alive_key)
            .key(&self.limits_key)
            .arg(self.redis.replica_id())
            .arg(self.limit)
            .arg(self.lease_ms())
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.lowest_live_limit.store(lowest, Ordering::Relaxed);
        let now = (lowest != highest).then(|| {
            format!(
                "replicas disagree on this model's limit (this one {}, live ones {lowest} to {highest}); all use {lowest}",
                self.limit
            )
        });
        let mut conflict = self.conflict.lock().unwrap_or_else(|p| p.into_inner());
        if now != *conflict {
            if let Some(text) = &now {
                tracing::error!(
                    model_limit = self.limit,
                    lowest,
                    highest,
                    "global model limit: {text}; give every replica of this key_prefix the same limits.max_concurrency_per_model"
                );
            }
            *conflict = now;
        }
        Ok(())
    }

    /// Reads the live count (dropping ended leases) into [`GlobalLimit::in_flight`].
    async fn refresh(&self) -> Result<(), RedisError> {
        self.record_limit().await?;
        let n: usize = Script::new(COUNT_LUA)
            .key(&self.leases_key)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// A published count (negative: the line moved, count unchanged): store it and wake
    /// the waiters.
    fn heard(&self, count: Option<i64>) {
        if let Some(n) = count.and_then(|n| usize::try_from(n).ok()) {
            self.in_flight.store(n, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    /// [`TICKET_LIFE`], or the lease when that is shorter.
    fn ticket_life(&self) -> Duration {
        TICKET_LIFE.min(self.redis.lease())
    }

    fn lease_ms(&self) -> u64 {
        self.redis.lease().as_millis().max(1) as u64
    }
}

/// A place in the line; dropped while still waiting (deadline, cancelled turn), it
/// leaves the line so it does not hold up the waiters behind it.
struct Ticket {
    limit: Arc<GlobalLimit>,
    id: String,
    waiting: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limit.waiting_here.fetch_sub(1, Ordering::Relaxed);
        if !self.waiting {
            return;
        }
        let (limit, id) = (self.limit.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = limit.leave(&id).await {
                    tracing::debug!(error = %e, "cannot leave the global model slot line; it ends with its lease");
                }
            });
        }
    }
}

/// A held global slot. Renewed every `lease_ms / 3` until dropped; dropping it releases
/// the slot (or, when Redis cannot be told, lets the lease end by itself).
pub(crate) struct Lease {
    limit: Arc<GlobalLimit>,
    member: String,
    lost: watch::Receiver<bool>,
    renewing: JoinHandle<()>,
}

impl Lease {
    fn start(limit: Arc<GlobalLimit>, member: String) -> Lease {
        let (lost_tx, lost) = watch::channel(false);
        let renewing = tokio::spawn(renew_until_lost(limit.clone(), member.clone(), lost_tx));
        Lease {
            limit,
            member,
            lost,
            renewing,
        }
    }

    /// Resolves when the lease was lost (see the module's invariants); never otherwise.
    pub(crate) async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|l| *l).await.is_err() {
            // The renewer ended without losing the lease: it is held until dropped.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
        let (limit, member) = (self.limit.clone(), std::mem::take(&mut self.member));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = limit.release(&member).await {
                    tracing::warn!(error = %e, "cannot release a global model slot; it ends with its lease");
                }
            });
        }
    }
}

/// Renews `member` every third of the lease; marks it lost and ends when it is gone.
async fn renew_until_lost(limit: Arc<GlobalLimit>, member: String, lost: watch::Sender<bool>) {
    let every = limit.redis.lease() / 3;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match limit.renew(&member).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("global model slot lost: the lease expired while this process was paused or Redis lost it (state.redis.lease_ms); cancelling the request");
                let _ = lost.send(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew a global model slot lease"),
        }
    }
}

/// Wakes the waiters of `limits` on every published change, and refreshes their counts
/// every third of the lease; resubscribes after a failure. Runs until aborted.
pub(crate) fn spawn_listener(
    redis: RedisState,
    limits: Vec<Arc<GlobalLimit>>,
) -> Option<JoinHandle<()>> {
    if limits.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let refresh_every = redis.lease() / 3;
        let mut outage = OutageLog::default();
        // Runs until aborted; each round is one subscription, bounded by its connection.
        loop {
            let mut subscribed = false;
            let ended = listen_once(&redis, &limits, refresh_every, &mut subscribed).await;
            if subscribed && outage.worked() {
                tracing::info!("global model slot events: subscribed again");
            }
            let why = match ended {
                Ok(()) => "the subscription's connection ended".to_string(),
                Err(e) => e.to_string(),
            };
            if outage.failed() {
                tracing::warn!(error = %why, "global model slot events lost; resubscribing every second (logged once until it works again)");
            } else {
                tracing::debug!(error = %why, "global model slot events: resubscribing");
            }
            // Wake everyone: a release may have been missed while unsubscribed.
            for l in &limits {
                l.heard(None);
            }
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    }))
}

/// One subscription: returns when its connection ends; sets `subscribed` once it
/// listens.
async fn listen_once(
    redis: &RedisState,
    limits: &[Arc<GlobalLimit>],
    refresh_every: Duration,
    subscribed: &mut bool,
) -> Result<(), RedisError> {
    let mut pubsub = redis.pubsub().await?;
    for l in limits {
        pubsub
            .subscribe(&l.channel)
            .await
            .map_err(|e| redis.error(e))?;
    }
    *subscribed = true;
    let mut messages = pubsub.on_message();
    let mut refresh = tokio::time::interval(refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let count = msg.get_payload::<i64>().ok();
                if let Some(l) = limits.iter().find(|l| l.channel == msg.get_channel_name()) {
                    l.heard(count);
                }
            }
            _ = refresh.tick() => {
                for l in limits {
                    if let Err(e) = l.refresh().await {
                        tracing::debug!(error = %e, "cannot read a global model slot count");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RedisConfig, Secret};
    use clawdbot_testkit::redis_server::RedisServer;

    async fn handle(url: &str, replica: &str, lease_ms: u64) -> RedisState {
        RedisState::connect(&RedisConfig {
            url: Secret::new(url),
            key_prefix: "t".into(),
            replica_id: Some(replica.into()),
            lease_ms,
        })
        .await
        .expect("connect")
    }

    /// 4 replicas, 12 turns each, limit 3: the number of leases held at once (counted
    /// by the holders themselves) never passes 3, and every turn gets a slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn many_acquirers_on_several_replicas_never_pass_the_limit() {
        let server = RedisServer::start();
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut turns = Vec::new();
        let mut listeners = Vec::new();
        for r in 0..4 {
            let redis = handle(&server.url(), &format!("r{r}"), 10_000).await;
            let limit = GlobalLimit::new(redis.clone(), "m", 3);
            listeners.extend(spawn_listener(redis, vec![limit.clone()]));
            for i in 0..12 {
                let (limit, holding, peak) = (limit.clone(), holding.clone(), peak.clone());
                turns.push(tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let conversation = format!("c{}", i % 5);
                    let lease = limit.acquire(&conversation, deadline).await;
                    let lease = lease.expect("a slot within 30 s");
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    drop(lease);
                }));
            }
        }
        for t in turns {
            t.await.expect("turn");
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "the limit is reached, never passed"
        );
        for l in listeners {
            l.abort();
        }
    }

    /// A holder that stops renewing (its replica died: the renewer is gone) loses the
    /// slot after lease_ms, and a waiter on another replica gets it then, not before.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn a_dead_holders_slot_comes_back_after_its_lease() {
        let server = RedisServer::start();
        let dead = GlobalLimit::new(handle(&server.url(), "dead", 600).await, "m", 1);
        let live = GlobalLimit::new(handle(&server.url(), "live", 600).await, "m", 1);
        let lease = dead.acquire("c", Instant::now()).await.expect("free slot");
        // The replica dies: no renewal and no release.
        lease.renewing.abort();
        std::mem::forget(lease);
        let asked = std::time::Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        let taken = live.acquire("c", far).await.expect("the slot comes back");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(400),
            "not before the lease ended: {waited:?}"
        );
        assert_eq!(live.in_flight(), 1);
        drop(taken);
    }

    /// A renewing holder keeps its slot well past lease_ms; a lease whose slot was taken
    /// while it was gone (as after a long Redis outage) is reported lost; Redis down means
    /// no slot (fail closed).
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn renewal_keeps_a_slot_a_taken_one_is_lost_and_a_down_redis_grants_none() {
        let mut server = RedisServer::start();
        let a = GlobalLimit::new(handle(&server.url(), "a", 300).await, "m", 1);
        let b = GlobalLimit::new(handle(&server.url(), "b", 300).await, "m", 1);
        let held = a.acquire("c", Instant::now()).await.expect("free slot");
        // Three leases long: b never gets the slot while a renews.
        let b_wait = b
            .acquire("c", Instant::now() + Duration::from_millis(900))
            .await;
        assert!(b_wait.is_none(), "a renewed lease is not taken");
        // a's lease vanishes and b takes the slot: a's next renewal reports it lost.
        server.cli(&["ZREM", "t:model:m:leases", &held.member]);
        let taken = b
            .acquire("c", Instant::now())
            .await
            .expect("the freed slot");
        tokio::time::timeout(Duration::from_secs(30), held.lost())
            .await
            .expect("the lost lease is reported");
        drop((held, taken));
        server.kill();
        let none = b
            .acquire("c", Instant::now() + Duration::from_millis(500))
            .await;
        assert!(none.is_none(), "no slot without redis");
    }

    /// Two replicas on one prefix configured with limits 2 and 5: once both recorded
    /// their limits, both enforce 2 (the replica configured with 5 gets no third slot)
    /// and both report the conflict naming the numbers.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn replicas_with_different_limits_all_use_the_lowest_and_say_so() {
        let server = RedisServer::start();
        let low = GlobalLimit::new(handle(&server.url(), "low", 10_000).await, "m", 2);
        let high = GlobalLimit::new(handle(&server.url(), "high", 10_000).await, "m", 5);
        // Each replica records every third of the lease; two rounds here.
        for g in [&low, &high, &low] {
            g.refresh().await.unwrap();
        }
        let mut held = Vec::new();
        for c in ["a", "b"] {
            held.push(high.acquire(c, Instant::now()).await.expect("within 2"));
        }
        let third = high.acquire("c", Instant::now()).await;
        assert!(third.is_none(), "a third slot above the lowest limit");
        for g in [&low, &high] {
            let text = g.conflict().expect("the conflict is shown");
            assert!(text.contains("2 to 5") && text.contains("use 2"), "{text}");
        }
        drop(held);
    }

    /// Waiters of several replicas are served round-robin across conversations: a
    /// quiet conversation's turn goes before the second turn of a flooding one, whatever
    /// replica each waits on; one that gave up leaves the line at once.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn waiters_across_replicas_are_served_round_robin_by_conversation() {
        let server = RedisServer::start();
        let mut limits = Vec::new();
        for r in ["a", "b", "c"] {
            limits.push(GlobalLimit::new(
                handle(&server.url(), r, 10_000).await,
                "m",
                1,
            ));
        }
        let held = limits[0].acquire("x", Instant::now()).await;
        let held = held.expect("free slot");
        // One waiter that gives up, then three turns of "flood" on three replicas, then
        // one of "quiet" (each queued before the next starts).
        let quitter = limits[2].acquire("q", Instant::now() + Duration::from_millis(300));
        assert!(quitter.await.is_none(), "no slot while held");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        let turns = [(1usize, "flood"), (2, "flood"), (0, "flood"), (1, "quiet")];
        for (n, (r, conversation)) in turns.into_iter().enumerate() {
            let (limit, order) = (limits[r].clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let far = Instant::now() + Duration::from_secs(30);
                let lease = limit.acquire(conversation, far).await;
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(lease.expect("served within 30 s"));
            }));
            let queued = || server.cli(&["ZCARD", "t:model:m:queue"]).trim() == (n + 1).to_string();
            let mut tries = 0;
            while !queued() {
                tries += 1;
                assert!(tries < 3_000, "waiter {n} never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let released = std::time::Instant::now();
        drop(held);
        for w in waiters {
            w.await.expect("waiter");
        }
        assert_eq!(*order.lock().unwrap(), [0, 3, 1, 2], "quiet goes second");
        // Four turns of 20 ms: far below the 10 s lease a stale ticket would cost.
        assert!(
            released.elapsed() < Duration::from_secs(8),
            "{:?}",
            released.elapsed()
        );
    }
}
