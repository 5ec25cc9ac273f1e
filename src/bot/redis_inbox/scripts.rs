//! The Lua scripts of the shared inbox. Each runs atomically in Redis, so a step that
//! touches several keys (dedupe, sequence, stream; ack and turn order) is never seen
//! half done by another replica, and a crash of a replica never leaves one half done.
//!
//! Keys (all through [`RedisState::key`]): `seen:{msg id}` (dedupe), `conv:{conversation}`
//! (a hash: `epoch` = a random id made with the record, `seq` = last arrival number handed
//! out, `next` = the number whose turn it is, `s:{n}` = number `n` finished before its
//! turn), `reply:{msg id}` (the reply marker:
//! `h:{replica}` while a replica holds the message's reply, `sent` once it went out) and
//! the stream `inbox` with its consumer group.

use std::sync::LazyLock;

use redis::Script;

use crate::state::redis::{RedisError, RedisState};

/// The consumer group every replica of one prefix reads the inbox in.
pub(crate) const GROUP: &str = "bot";

/// How long a conversation's order hash is kept after its last message (it is recreated
/// from 1 when gone, so this only bounds what idle conversations cost).
pub(crate) const ORDER_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Dedupe, arrival number and stream entry in one step.
/// KEYS: seen, conv, inbox. ARGV: dedupe ms, payload, conversation, order ttl ms, epoch
/// for a record made now.
/// Returns 0 for a duplicate, else the message's arrival number. When XADD fails the
/// dedupe key and the number are given back, so no number is ever skipped.
///
/// Epoch: a conversation record made here (none yet, expired, or lost with Redis's data)
/// gets the caller's fresh random epoch, and every entry carries its record's epoch, so
/// an arrival number means something only together with that epoch (see [`FINISH_LUA`]).
/// A record written before epochs existed has none: its epoch is the empty string.
static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_LUA));
const ADMIT_LUA: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('HSET', KEYS[2], 'epoch', ARGV[5]) end
local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local added = redis.pcall('XADD', KEYS[3], '*', 'msg', ARGV[2], 'conv', ARGV[3], 'seq', seq, 'epoch', epoch)
if type(added) == 'table' and added.err then
  redis.call('HINCRBY', KEYS[2], 'seq', -1)
  redis.call('DEL', KEYS[1])
  return added
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return seq
"#;

/// Takes (or keeps) the reply marker of one message for this replica.
/// KEYS: reply. ARGV: holder value (`h:{replica}`), lease ms.
/// Returns `mine`, `sent` (answered already) or `held` (another live replica has it).
static TAKE_MARKER: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_MARKER_LUA));
const TAKE_MARKER_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'mine'
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'mine'
end
if v == 'sent' then return 'sent' end
return 'held'
"#;

/// Keeps a message this replica works on: resets its idle time in the group (only while
/// this replica still owns the entry) and renews its reply marker (only while it is ours).
/// KEYS: inbox, reply. ARGV: group, consumer, entry id, holder value, lease ms.
/// Returns 1 while both are still ours.
static KEEP: LazyLock<Script> = LazyLock::new(|| Script::new(KEEP_LUA));
const KEEP_LUA: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
local owned = p[1] ~= nil and p[1][2] == ARGV[2]
if owned then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID') end
local marked = redis.call('GET', KEYS[2]) == ARGV[4]
if marked then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
if owned and marked then return 1 end
return 0
"#;

/// Ends a message: acks and deletes its entry and moves its conversation's turn on; or,
/// with ARGV[6] = "0", only takes it out of its conversation's line (a message told busy,
/// whose busy reply is still on its way: its entry stays pending until it ends).
/// The number whose turn it is advances only from that very number (the fencing check):
/// finishing an earlier number again changes nothing, and a number finished before its
/// turn (a message told busy while it waited) is recorded and skipped when reached. So a
/// message that left its line ends later with no further effect on the line.
/// The record is touched only when it is the one the message was numbered in (same
/// epoch): a message whose record was lost (Redis lost its data mid-turn) must not write
/// its old number into a new record, where it would mark new messages as done.
/// KEYS: inbox, conv. ARGV: group, entry id, seq, order ttl ms, epoch, "1" to end it.
/// Returns the new `next`, or -1 when the record is not the message's (left untouched).
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH_LUA));
const FINISH_LUA: &str = r#"
if ARGV[6] == '1' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if (redis.call('HGET', KEYS[2], 'epoch') or '') ~= ARGV[5] then return -1 end
local seq = tonumber(ARGV[3])
local nxt = tonumber(redis.call('HGET', KEYS[2], 'next') or '1')
if seq == nxt then
  nxt = seq + 1
  while redis.call('HDEL', KEYS[2], 's:' .. nxt) == 1 do nxt = nxt + 1 end
  redis.call('HSET', KEYS[2], 'next', nxt)
elseif seq > nxt then
  redis.call('HSET', KEYS[2], 's:' .. seq, 1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return nxt
"#;

/// What the reply marker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// This replica holds the message's reply.
    Mine,
    /// Its reply went out already (from any replica).
    Sent,
    /// Another replica holds it and keeps it alive.
    Held,
}

/// The marker value of a replica holding a reply.
pub(crate) fn holder(redis: &RedisState) -> String {
    format!("h:{}", redis.replica_id())
}

/// Runs [`ADMIT_LUA`]: `None` for a duplicate, else the arrival number.
pub(crate) async fn admit(
    redis: &RedisState,
    msg_id: &str,
    conversation: &str,
    payload: &str,
    dedupe_ms: u64,
) -> Result<Option<u64>, RedisError> {
    let seq: u64 = ADMIT
        .key(redis.key(&["seen", msg_id]))
        .key(redis.key(&["conv", conversation]))
        .key(redis.key(&["inbox"]))
        .arg(dedupe_ms)
        .arg(payload)
        .arg(conversation)
        .arg(ORDER_TTL_MS)
        .arg(new_epoch())
        .invoke_async(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))?;
    Ok((seq > 0).then_some(seq))
}

/// Runs [`TAKE_MARKER_LUA`] for `msg_id`.
pub(crate) async fn take_marker(redis: &RedisState, msg_id: &str) -> Result<Marker, RedisError> {
    let said: String = TAKE_MARKER
        .key(redis.key(&["reply", msg_id]))
        .arg(holder(redis))
        .arg(redis.lease().as_millis() as u64)
        .invoke_async(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))?;
    Ok(match said.as_str() {
        "mine" => Marker::Mine,
        "sent" => Marker::Sent,
        _ => Marker::Held,
    })
}

/// Marks `msg_id`'s reply as sent for `keep_ms` (a claimer then only finishes it).
pub(crate) async fn mark_sent(
    redis: &RedisState,
    msg_id: &str,
    keep_ms: u64,
) -> Result<(), RedisError> {
    redis::cmd("SET")
        .arg(redis.key(&["reply", msg_id]))
        .arg("sent")
        .arg("PX")
        .arg(keep_ms)
        .query_async::<()>(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))
}

/// Runs [`KEEP_LUA`]: true while the entry and the marker are still this replica's.
pub(crate) async fn keep(
    redis: &RedisState,
    msg_id: &str,
    entry: &str,
) -> Result<bool, RedisError> {
    let kept: u64 = KEEP
        .key(redis.key(&["inbox"]))
        .key(redis.key(&["reply", msg_id]))
        .arg(GROUP)
        .arg(redis.replica_id())
        .arg(entry)
        .arg(holder(redis))
        .arg(redis.lease().as_millis() as u64)
        .invoke_async(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))?;
    Ok(kept == 1)
}

/// A fresh conversation record's epoch: 64 random bits, so a record made again (after
/// Redis lost its data) never has the epoch of the one lost.
fn new_epoch() -> String {
    crate::random_hex::random_hex(8)
}

/// A conversation's arrival number with the epoch of the record it was given in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) epoch: String,
    pub(crate) seq: u64,
}

/// Runs [`FINISH_LUA`] to end the message; returns the conversation's new `next`, or
/// `None` when the record is not the one `place` was numbered in (it was left untouched).
pub(crate) async fn finish(
    redis: &RedisState,
    conversation: &str,
    entry: &str,
    place: &Place,
) -> Result<Option<u64>, RedisError> {
    run_finish(redis, conversation, entry, place, true).await
}

/// Runs [`FINISH_LUA`] to take the message out of its conversation's line only (its
/// entry stays pending); returns as [`finish`] does.
pub(crate) async fn leave_line(
    redis: &RedisState,
    conversation: &str,
    place: &Place,
) -> Result<Option<u64>, RedisError> {
    run_finish(redis, conversation, "", place, false).await
}

async fn run_finish(
    redis: &RedisState,
    conversation: &str,
    entry: &str,
    place: &Place,
    end: bool,
) -> Result<Option<u64>, RedisError> {
    let next: i64 = FINISH
        .key(redis.key(&["inbox"]))
        .key(redis.key(&["conv", conversation]))
        .arg(GROUP)
        .arg(entry)
        .arg(place.seq)
        .arg(ORDER_TTL_MS)
        .arg(&place.epoch)
        .arg(if end { "1" } else { "0" })
        .invoke_async(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))?;
    Ok(u64::try_from(next).ok())
}

/// Where a waiting message stands in its conversation's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Every earlier message ended: its turn.
    Due,
    /// An earlier message has not ended yet.
    Waiting,
    /// The line is past it: another replica ended it.
    Past,
    /// Its record is gone or was made again (Redis lost its data): its place in line is
    /// unknown, so it is answered now rather than dropped.
    Lost,
}

/// Reads where `place` stands in `conversation`'s line.
pub(crate) async fn turn(
    redis: &RedisState,
    conversation: &str,
    place: &Place,
) -> Result<Turn, RedisError> {
    let (epoch, next, seq): (Option<String>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
        .arg(redis.key(&["conv", conversation]))
        .arg("epoch")
        .arg("next")
        .arg("seq")
        .query_async(&mut redis.conn())
        .await
        .map_err(|e| redis.error(e))?;
    if seq.is_none() || epoch.unwrap_or_default() != place.epoch {
        return Ok(Turn::Lost);
    }
    let next = next.unwrap_or(1);
    Ok(match place.seq.cmp(&next) {
        std::cmp::Ordering::Equal => Turn::Due,
        std::cmp::Ordering::Greater => Turn::Waiting,
        std::cmp::Ordering::Less => Turn::Past,
    })
}
