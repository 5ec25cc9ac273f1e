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
//! Invariants:
//! - the set never holds more than `limit` live leases: an acquire adds one only when
//!   fewer are live, and a renewal re-adds a lease that ran out only under that same rule;
//! - a holder renews every `lease_ms / 3` while its turn runs; when a renewal finds its
//!   lease gone and no room to take it back (Redis was unreachable longer than the
//!   lease and another replica took the slot), the lease is *lost*: the turn's request is
//!   cancelled ([`Lease::lost`]) so the model never runs more than `limit`;
//! - Redis unreachable means no new lease (fail closed): waiters keep retrying until their
//!   wait budget ends and the turn gets the busy reply, as with a full local queue.
//!
//! The local round-robin [`super::limiter::Limiter`] stays in front: a turn takes its
//! local slot first, so fairness across conversations inside one replica is unchanged and
//! at most `limit` turns per replica wait here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::state::redis::{RedisError, RedisState};

/// The safety-net retry of a waiter that heard no release.
const POLL: Duration = Duration::from_millis(250);
/// The wait before resubscribing after the pub/sub connection failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Removes ended leases, then adds ARGV[1] ending at now + ARGV[3] ms when fewer than
/// ARGV[2] are live; publishes the new count on ARGV[4]. Returns {granted 0/1, count}.
const ACQUIRE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], n + 1)
return {1, n + 1}
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
    channel: String,
    limit: usize,
    /// Woken on every published change and every local release.
    changed: Notify,
    /// The live count last seen in Redis (status and metrics).
    in_flight: AtomicUsize,
    next_lease: AtomicU64,
}

impl GlobalLimit {
    pub(crate) fn new(redis: RedisState, model: &str, limit: usize) -> Arc<GlobalLimit> {
        Arc::new(GlobalLimit {
            leases_key: redis.key(&["model", model, "leases"]),
            channel: redis.key(&["model", model, "leases-changed"]),
            redis,
            limit: limit.max(1),
            changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            next_lease: AtomicU64::new(0),
        })
    }

    /// Leases live across all replicas, as last seen.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits for a global slot until `deadline`; `None` when none came free in time (or
    /// Redis could not be asked: fail closed). The lease is renewed until dropped.
    pub(crate) async fn acquire(self: &Arc<Self>, deadline: Instant) -> Option<Lease> {
        let member = format!(
            "{}:{}",
            self.redis.replica_id(),
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let mut warned = false;
        // Bounded by `deadline`: every round waits for a change or POLL.
        loop {
            // Registered before asking, so a release between the answer and the wait
            // still wakes this waiter.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_acquire(&member).await {
                Ok(true) => return Some(Lease::start(self.clone(), member)),
                Ok(false) => {}
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot take a global model slot; waiting (fail closed)");
                }
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let until = deadline.min(now + POLL);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn try_acquire(&self, member: &str) -> Result<bool, RedisError> {
        let (granted, n): (u8, usize) = Script::new(ACQUIRE_LUA)
            .key(&self.leases_key)
            .arg(member)
            .arg(self.limit)
            .arg(self.lease_ms())
            .arg(&self.channel)
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
            .arg(self.limit)
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

    /// Reads the live count (dropping ended leases) into [`GlobalLimit::in_flight`].
    async fn refresh(&self) -> Result<(), RedisError> {
        let n: usize = Script::new(COUNT_LUA)
            .key(&self.leases_key)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// A published count: store it and wake the waiters.
    fn heard(&self, count: Option<usize>) {
        if let Some(n) = count {
            self.in_flight.store(n, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    fn lease_ms(&self) -> u64 {
        self.redis.lease().as_millis().max(1) as u64
    }
}

/// A held global slot. Renewed every `lease_ms / 3` until dropped; dropping it releases
/// the slot (or, when Redis cannot be told, lets the lease end by itself).
pub(crate) struct Lease {
    limit: Arc<GlobalLimit>,
    member: String,
    lost: watch::Receiver<bool>,
    renewing: JoinHandle<()>,
    released: AtomicBool,
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
            released: AtomicBool::new(false),
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
        if self.released.swap(true, Ordering::Relaxed) {
            return;
        }
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
                tracing::warn!("global model slot lease lost (redis unreachable longer than state.redis.lease_ms); cancelling the request");
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
        // Runs until aborted; each round is one subscription, bounded by its connection.
        loop {
            if let Err(e) = listen_once(&redis, &limits, refresh_every).await {
                tracing::warn!(error = %e, "global model slot events lost; resubscribing");
            }
            // Wake everyone: a release may have been missed while unsubscribed.
            for l in &limits {
                l.heard(None);
            }
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    }))
}

/// One subscription: returns when its connection ends.
async fn listen_once(
    redis: &RedisState,
    limits: &[Arc<GlobalLimit>],
    refresh_every: Duration,
) -> Result<(), RedisError> {
    let mut pubsub = redis.pubsub().await?;
    for l in limits {
        pubsub
            .subscribe(&l.channel)
            .await
            .map_err(|e| redis.error(e))?;
    }
    let mut messages = pubsub.on_message();
    let mut refresh = tokio::time::interval(refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let count = msg.get_payload::<usize>().ok();
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
            for _ in 0..12 {
                let (limit, holding, peak) = (limit.clone(), holding.clone(), peak.clone());
                turns.push(tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let lease = limit.acquire(deadline).await.expect("a slot within 30 s");
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
        let lease = dead.acquire(Instant::now()).await.expect("free slot");
        // The replica dies: no renewal and no release.
        lease.renewing.abort();
        std::mem::forget(lease);
        let asked = std::time::Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        let taken = live.acquire(far).await.expect("the slot comes back");
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
        let held = a.acquire(Instant::now()).await.expect("free slot");
        // Three leases long: b never gets the slot while a renews.
        let b_wait = b.acquire(Instant::now() + Duration::from_millis(900)).await;
        assert!(b_wait.is_none(), "a renewed lease is not taken");
        // a's lease vanishes and b takes the slot: a's next renewal reports it lost.
        server.cli(&["ZREM", "t:model:m:leases", &held.member]);
        let taken = b.acquire(Instant::now()).await.expect("the freed slot");
        tokio::time::timeout(Duration::from_secs(30), held.lost())
            .await
            .expect("the lost lease is reported");
        drop((held, taken));
        server.kill();
        let none = b.acquire(Instant::now() + Duration::from_millis(500)).await;
        assert!(none.is_none(), "no slot without redis");
    }
}
