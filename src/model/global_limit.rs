//! The per-model concurrency limit shared by every replica (`state.backend: redis`): one
//! global semaphore per model, made of leases in Redis.
//!
//! Each held slot is a member of the sorted set `{prefix}:model:{name}:leases`, scored by
//! the time its lease ends on Redis's own clock (`TIME`, never a replica's clock). Lua
//! scripts acquire, renew and release atomically; every script first drops the leases
//! that ended, so a dead replica's slots come back `lease_ms` after its last renewal.
//!
//! Waiters of all replicas stand in one line, served round-robin across conversations as
//! the local [`super::limiter::Limiter`] serves them in one daemon: each waits with a
//! ticket in `{prefix}:model:{name}:queue` placed by round (a conversation's next ticket
//! goes one round after its previous one, a new conversation's into the round being
//! served) and by arrival within a round; a free slot goes to the first live tickets
//! only. The script that frees a slot (a release, a waiter leaving, a try that found an
//! ended lease) grants it in the same step: the head ticket becomes a lease of the same
//! id, and the grant is published as `COUNT TICKET` on
//! `{prefix}:model:{name}:leases-changed`, which wakes that waiter alone (on the
//! releasing replica the script's answer wakes it first). So a hand-off costs one script
//! run and one message, whatever the number of waiters: no waiter asks Redis again on a
//! release (no thundering herd) and none waits for a retry. A waiter still asks every
//! [`POLL`] as a safety net (a lost message, a lease that simply ran out) and after the
//! subscription was lost; counts are published (`COUNT`) for status. A waiter refreshes
//! its ticket on every try; the ticket of one that stopped asking (dead replica) is
//! dropped after [`TICKET_LIFE_IN_POLLS`] polls (or `lease_ms` if shorter), and a grant
//! it did not take up (renewed) within that time ends by itself.
//!
//! Invariants:
//! - the set never holds more than `limit` live leases: a grant adds one only when
//!   fewer are live, and a renewal re-adds a lease that ran out only under that same rule;
//! - a holder renews at once, then every `lease_ms / 3` while its turn runs; when a renewal finds its
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::random_hex::random_hex;
use crate::state::outage_log::OutageLog;
use crate::state::redis::{RedisError, RedisState};

/// The safety-net retry of a waiter that heard no grant (a lost message, a lease that
/// simply ran out).
const POLL: Duration = Duration::from_millis(250);
/// How many polls a waiter's ticket outlives its last try (capped by the lease): a dead
/// replica's waiters stop holding up the line after this, not after a whole lease. It
/// is also how long a granted waiter has to take up its lease (see [`GRANT_LUA`]).
const TICKET_LIFE_IN_POLLS: u32 = 8;
/// The shortest bound on one try, and the longest wait for leaving the line after a wait
/// ran out (Redis slow or down: the ticket then ends by itself after lease_ms).
const LEAVE_WAIT: Duration = Duration::from_millis(500);
/// The wait before resubscribing after the pub/sub connection failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The common head of the scripts that hand out slots (acquire, release, leave).
///
/// KEYS: leases, queue (ticket -> place), queue-alive (ticket -> expiry), sequence,
/// rounds (conversation -> its last round), round (the round last served).
/// ARGV: member (lease or ticket), limit, lease ms, channel, ticket life ms.
///
/// `tidy()` drops ended leases and the tickets of waiters that stopped asking.
/// `grant()` gives every free slot to the first ticket of the line, in line order: the
/// ticket becomes a lease (the ticket id is the lease member) that ends after the ticket
/// life unless its waiter renews it, and each grant is published as "COUNT TICKET" so
/// that only that ticket's waiter wakes (no other waiter asks Redis again). Returns the
/// live count and the granted tickets. So a release hands its slot over in the same
/// script, and nobody polls for it.
macro_rules! grant_lua {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_round = 1048576
local function tidy()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, d in ipairs(dead) do
    redis.call('ZREM', KEYS[2], d)
    redis.call('ZREM', KEYS[3], d)
  end
end
local function grant()
  local n = redis.call('ZCARD', KEYS[1])
  local granted = {}
  local free = tonumber(ARGV[2]) - n
  if free <= 0 then return n, granted end
  local heads = redis.call('ZRANGE', KEYS[2], 0, free - 1, 'WITHSCORES')
  if #heads == 0 then return n, granted end
  local served = tonumber(redis.call('GET', KEYS[6]) or '0')
  for i = 1, #heads, 2 do
    local ticket, round = heads[i], math.floor(tonumber(heads[i + 1]) / per_round)
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ticket)
    n = n + 1
    if round > served then
      served = round
      redis.call('SET', KEYS[6], round, 'PX', ARGV[3])
      -- A conversation whose last round is before the served one is placed like a new one.
      redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', round - 1)
    end
    redis.call('PUBLISH', ARGV[4], n .. ' ' .. ticket)
    granted[#granted + 1] = ticket
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return n, granted
end
"#
    };
}

/// [`grant_lua`], then: ARGV[6] conversation. A ticket already granted (by a release, or
/// by a try whose answer was lost) is taken as is. Otherwise, on its first call a ticket
/// is placed in round max(served round, its conversation's last round + 1), after the
/// tickets already in that round (arrival order): each conversation gets one grant per
/// round, as the local round-robin does. Refreshes the ticket and grants the free slots.
/// Returns {granted 0/1, live leases}.
const ACQUIRE_LUA: &str = concat!(
    grant_lua!(),
    r#"
tidy()
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, redis.call('ZCARD', KEYS[1])} end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  local round = tonumber(redis.call('GET', KEYS[6]) or '0')
  local last = redis.call('ZSCORE', KEYS[5], ARGV[6])
  if last and tonumber(last) + 1 > round then round = tonumber(last) + 1 end
  redis.call('ZADD', KEYS[5], round, ARGV[6])
  redis.call('ZADD', KEYS[2], round * per_round + redis.call('INCR', KEYS[4]) % per_round, ARGV[1])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
for i = 2, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
local n = grant()
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, n} end
return {0, n}
"#
);

/// [`grant_lua`]: ARGV[1] gives up its place in line and the lease it may have been
/// granted meanwhile (release), and the free slots go to the next tickets. Publishes the
/// count when nobody was granted. Returns {live leases, {granted tickets}}.
const HAND_OVER_LUA: &str = concat!(
    grant_lua!(),
    r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
tidy()
local n, granted = grant()
if #granted == 0 then redis.call('PUBLISH', ARGV[4], n) end
return {n, granted}
"#
);

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static HAND_OVER: LazyLock<Script> = LazyLock::new(|| Script::new(HAND_OVER_LUA));

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
    /// Woken when a grant may have been missed (the subscription was lost): every waiter
    /// asks Redis again.
    resync: Notify,
    /// This replica's waiting tickets, each with the signal its grant is given on.
    waiters: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
    /// Makes this process's ticket ids unique even when a replica id is reused by a
    /// restarted process.
    ticket_prefix: String,
    /// The safety-net retry interval of a waiter.
    poll: Duration,
    /// How long a ticket stays in line after its waiter's last try, and how long a
    /// granted waiter has to take up its lease.
    ticket_life: Duration,
    /// The live count last seen in Redis (status and metrics).
    in_flight: AtomicUsize,
    /// Turns of this replica waiting in the line now.
    waiting_here: AtomicUsize,
    next_lease: AtomicU64,
}

impl GlobalLimit {
    pub(crate) fn new(redis: RedisState, model: &str, limit: usize) -> Arc<GlobalLimit> {
        let poll = POLL.min(redis.lease() / 4);
        GlobalLimit::with_poll(redis, model, limit, poll)
    }

    /// [`GlobalLimit::new`] with the waiters' safety-net retry every `poll`; a ticket
    /// lives [`TICKET_LIFE_IN_POLLS`] polls (at most the lease).
    fn with_poll(redis: RedisState, model: &str, limit: usize, poll: Duration) -> Arc<GlobalLimit> {
        let ticket_life = (poll * TICKET_LIFE_IN_POLLS).min(redis.lease());
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
            ticket_prefix: format!("{}:{}", redis.replica_id(), random_hex(4)),
            redis,
            limit: limit.max(1),
            lowest_live_limit: AtomicUsize::new(limit.max(1)),
            conflict: std::sync::Mutex::new(None),
            resync: Notify::new(),
            waiters: std::sync::Mutex::new(HashMap::new()),
            poll,
            ticket_life,
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
    ///
    /// Redis is asked once on arrival, then only every `poll` (safety net) or after the
    /// subscription was lost: a slot freed meanwhile is granted by the script that freed
    /// it, and the grant wakes this waiter alone.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        conversation: &str,
        deadline: Instant,
    ) -> Option<Lease> {
        let ticket = Ticket::new(self);
        let mut warned = false;
        // Bounded by `deadline`: every round waits for a grant, a resync or `poll`.
        loop {
            // Registered before asking, so a resync during the try still wakes this
            // waiter (a grant is never missed: its signal keeps a permit).
            let resync = self.resync.notified();
            tokio::pin!(resync);
            resync.as_mut().enable();
            // Every try gets at least LEAVE_WAIT, so a deadline of "now" still asks once. A
            // try cut short may still have been granted in Redis: leaving gives that
            // slot back.
            let cut = deadline.max(Instant::now() + LEAVE_WAIT);
            let tried =
                tokio::time::timeout_at(cut, self.try_acquire(&ticket.id, conversation)).await;
            match tried.unwrap_or(Err(RedisError::TimedOut)) {
                Ok(true) => return Some(ticket.into_lease()),
                Ok(false) => {}
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot take a global model slot; waiting (fail closed)");
                }
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                ticket.leave_now().await;
                return None;
            }
            let until = deadline.min(now + self.poll);
            tokio::select! {
                _ = ticket.granted.notified() => return Some(ticket.into_lease()),
                _ = resync => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn try_acquire(&self, member: &str, conversation: &str) -> Result<bool, RedisError> {
        let (granted, n): (u8, usize) = self
            .granting_script(&ACQUIRE, member)
            .arg(conversation)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        Ok(granted == 1)
    }

    /// A script with [`grant_lua`]'s keys and arguments, for `member`.
    fn granting_script(
        &self,
        script: &'static Script,
        member: &str,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.key(&self.leases_key);
        invocation
            .key(&self.queue_key)
            .key(&self.queue_alive_key)
            .key(&self.sequence_key)
            .key(&self.rounds_key)
            .key(&self.round_key)
            .arg(member)
            .arg(self.enforced_limit())
            .arg(self.lease_ms())
            .arg(&self.channel)
            .arg(self.ticket_life.as_millis() as u64);
        invocation
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

    /// Gives up `member`'s lease or place in line (and a lease granted to it meanwhile);
    /// the free slots go to the next tickets at once, this replica's waking here.
    async fn hand_over(&self, member: &str) -> Result<(), RedisError> {
        let (n, granted): (usize, Vec<String>) = self
            .granting_script(&HAND_OVER, member)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| self.redis.error(e))?;
        self.in_flight.store(n, Ordering::Relaxed);
        for ticket in &granted {
            self.wake_granted(ticket);
        }
        Ok(())
    }

    /// Wakes the waiter of `ticket` if it waits on this replica.
    fn wake_granted(&self, ticket: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(granted) = waiters.get(ticket) {
            granted.notify_one();
        }
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

    /// A published change: "COUNT", or "COUNT TICKET" for a grant (which wakes that
    /// ticket's waiter if it is here); `None` when the subscription was lost and grants
    /// may have been missed, so every waiter asks Redis again.
    fn heard(&self, message: Option<&str>) {
        let Some(message) = message else {
            self.resync.notify_waiters();
            return;
        };
        let (count, ticket) = match message.split_once(' ') {
            Some((count, ticket)) => (count, Some(ticket)),
            None => (message, None),
        };
        if let Ok(n) = count.parse::<usize>() {
            self.in_flight.store(n, Ordering::Relaxed);
        }
        if let Some(ticket) = ticket {
            self.wake_granted(ticket);
        }
    }

    fn lease_ms(&self) -> u64 {
        self.redis.lease().as_millis().max(1) as u64
    }
}

/// A place in the line, registered so that a grant naming it wakes its waiter; dropped
/// while still waiting (deadline, cancelled turn), it leaves the line (giving back a
/// slot granted meanwhile) so it does not hold up the waiters behind it.
struct Ticket {
    limit: Arc<GlobalLimit>,
    id: String,
    granted: Arc<Notify>,
    waiting: bool,
}

impl Ticket {
    fn new(limit: &Arc<GlobalLimit>) -> Ticket {
        let id = format!(
            "{}:{}",
            limit.ticket_prefix,
            limit.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let granted = Arc::new(Notify::new());
        limit
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), granted.clone());
        limit.waiting_here.fetch_add(1, Ordering::Relaxed);
        Ticket {
            limit: limit.clone(),
            id,
            granted,
            waiting: true,
        }
    }

    /// The granted ticket becomes the lease of the same id.
    fn into_lease(mut self) -> Lease {
        self.waiting = false;
        Lease::start(self.limit.clone(), self.id.clone())
    }

    /// Leaves the line now, waiting at most [`LEAVE_WAIT`] for Redis.
    async fn leave_now(mut self) {
        self.waiting = false;
        let left = tokio::time::timeout(LEAVE_WAIT, self.limit.hand_over(&self.id)).await;
        if !matches!(left, Ok(Ok(()))) {
            tracing::debug!(
                "cannot leave the global model slot line; the ticket ends after lease_ms"
            );
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limit.waiting_here.fetch_sub(1, Ordering::Relaxed);
        self.limit
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if !self.waiting {
            return;
        }
        let (limit, id) = (self.limit.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = limit.hand_over(&id).await {
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
                if let Err(e) = limit.hand_over(&member).await {
                    tracing::warn!(error = %e, "cannot release a global model slot; it ends with its lease");
                }
            });
        }
    }
}

/// Renews `member` at once (a grant lasts only the ticket life until taken up), then
/// every third of the lease; marks it lost and ends when it is gone.
async fn renew_until_lost(limit: Arc<GlobalLimit>, member: String, lost: watch::Sender<bool>) {
    let every = limit.redis.lease() / 3;
    let mut tick = tokio::time::interval(every);
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

/// Wakes the waiter named by each published grant (and stores the published counts),
/// refreshes the counts
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
                let message = msg.get_payload::<String>().ok();
                if let Some(l) = limits.iter().find(|l| l.channel == msg.get_channel_name()) {
                    l.heard(Some(message.as_deref().unwrap_or_default()));
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

    /// A waiter whose replica died while it was at the head of the line (its ticket still
    /// live) is granted the freed slot, which ends after the ticket life (8 polls: 4 s
    /// here), not after a whole lease (30 s), and then goes to the live waiter behind it.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn a_slot_granted_to_a_dead_waiter_ends_after_the_ticket_life() {
        let server = RedisServer::start();
        let poll = Duration::from_millis(500);
        let holder = GlobalLimit::with_poll(handle(&server.url(), "h", 30_000).await, "m", 1, poll);
        let live =
            GlobalLimit::with_poll(handle(&server.url(), "live", 30_000).await, "m", 1, poll);
        let held = holder
            .acquire("x", Instant::now())
            .await
            .expect("free slot");
        let redis_now = || -> u64 {
            let time = server.cli(&["TIME"]);
            let mut parts = time.split_whitespace().map(|p| p.parse::<u64>().unwrap());
            parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000
        };
        // The dead replica's waiter: first in line, its ticket live for 30 s more.
        let alive_until = (redis_now() + 30_000).to_string();
        server.cli(&["ZADD", "t:model:m:queue", "0", "dead:0"]);
        server.cli(&["ZADD", "t:model:m:queue-alive", &alive_until, "dead:0"]);
        let waiter = tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(30);
            live.acquire("c", far).await.map(|lease| (lease, live))
        });
        let queued = || server.cli(&["ZCARD", "t:model:m:queue"]).trim() == "2";
        for tries in 0.. {
            assert!(tries < 3_000, "the live waiter never queued");
            if queued() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        let dead_lease = || server.cli(&["ZSCORE", "t:model:m:leases", "dead:0"]);
        let mut ends = String::new();
        for tries in 0.. {
            assert!(tries < 3_000, "the dead waiter was never granted");
            ends = dead_lease();
            if !ends.trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let left = ends
            .trim()
            .parse::<u64>()
            .unwrap()
            .saturating_sub(redis_now());
        assert!(
            left <= 4_000,
            "the grant lasts the ticket life, not the lease: {left} ms"
        );
        let taken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
        let (lease, live) = taken.expect("within 30 s").unwrap().expect("the slot");
        assert!(dead_lease().trim().is_empty(), "the dead grant ended first");
        assert_eq!(live.in_flight(), 1);
        drop(lease);
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

    /// Script runs (EVAL and EVALSHA that did not fail) since the last `CONFIG RESETSTAT`.
    fn script_runs(server: &RedisServer) -> u64 {
        let stats = server.cli(&["INFO", "commandstats"]);
        let field = |line: &str, name: &str| -> u64 {
            line.split([':', ','])
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
            .map(|l| field(l, "calls") - field(l, "failed_calls"))
            .sum()
    }

    /// Eight waiters on two replicas, limit 1, each retrying only every minute (so a
    /// grant within the 30 s bound came from the hand-off, never from a retry). Each
    /// release grants the head of the line in the script that released and wakes that
    /// waiter alone, on its own replica or the other one (by the published grant): in
    /// line order, with at most 3 script runs per hand-off (the release, this grant's
    /// first renewal, the previous grant's if it ran late) and 2 per grant over all,
    /// whatever the number of waiters. (Before, every release woke every waiter, and
    /// each ran the acquire script.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn a_release_hands_its_slot_to_the_head_of_the_line_alone() {
        const WAITERS: usize = 8;
        let server = RedisServer::start();
        let poll = Duration::from_secs(60);
        // The first holder's replica has no waiters (nor listener): before the waiters
        // come, a and b run only their listeners' first refresh.
        let first = GlobalLimit::with_poll(handle(&server.url(), "h", 600_000).await, "m", 1, poll);
        let held = first.acquire("x", Instant::now()).await.expect("free slot");
        let mut replicas = Vec::new();
        let mut listeners = Vec::new();
        for name in ["a", "b"] {
            let redis = handle(&server.url(), name, 600_000).await;
            let limit = GlobalLimit::with_poll(redis.clone(), "m", 1, poll);
            listeners.extend(spawn_listener(redis, vec![limit.clone()]));
            replicas.push(limit);
        }
        // A listener's first refresh ends by reading the count (1), after it subscribed;
        // the next one is 200 s away.
        for tries in 0.. {
            assert!(tries < 3_000, "never subscribed");
            if replicas.iter().all(|r| r.in_flight() == 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (granted_tx, mut granted) = tokio::sync::mpsc::unbounded_channel();
        let mut releases = std::collections::VecDeque::new();
        let mut waiters = Vec::new();
        for n in 0..WAITERS {
            let limit = replicas[n % 2].clone();
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            let granted_tx = granted_tx.clone();
            waiters.push(tokio::spawn(async move {
                let far = Instant::now() + Duration::from_secs(30);
                let lease = limit.acquire(&format!("c{n}"), far).await;
                let lease = lease.expect("served within 30 s");
                granted_tx.send(n).expect("the test listens");
                let _ = released.await;
                drop(lease);
            }));
            releases.push_back(release);
            let queued = || server.cli(&["ZCARD", "t:model:m:queue"]).trim() == (n + 1).to_string();
            for tries in 0.. {
                assert!(tries < 3_000, "waiter {n} never queued");
                if queued() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut held = Some(held);
        let mut total = 0;
        for n in 0..WAITERS {
            server.cli(&["CONFIG", "RESETSTAT"]);
            match held.take() {
                Some(first) => drop(first),
                None => {
                    let previous = releases.pop_front().expect("a holder");
                    previous.send(()).expect("the holder waits");
                }
            }
            let next = tokio::time::timeout(Duration::from_secs(30), granted.recv()).await;
            assert_eq!(
                next.expect("a grant without a retry"),
                Some(n),
                "line order"
            );
            let runs = script_runs(&server);
            assert!(
                runs <= 3,
                "hand-off {n} ({} waiting) took {runs} script runs: {}",
                WAITERS - n,
                server.cli(&["INFO", "commandstats"])
            );
            total += runs;
        }
        assert!(
            total <= 2 * WAITERS as u64,
            "{total} script runs for {WAITERS} grants"
        );
        drop(releases);
        for w in waiters {
            w.await.expect("waiter");
        }
        for l in listeners {
            l.abort();
        }
    }
}
