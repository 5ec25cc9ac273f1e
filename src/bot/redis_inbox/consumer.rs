//! The two loops that bring stream entries to this replica: new ones (`XREADGROUP`) and
//! those a replica stopped working on (`XAUTOCLAIM` with min-idle = the lease).
//!
//! Invariants: each loop ends once the bot stopped taking deliveries; neither reads while
//! this replica holds [`super::MAX_HELD`] messages (the rest stays in Redis for the other
//! replicas, and each held message costs a keeper and a waiter); every Redis error
//! is followed by a capped backoff (no spin), and the group is recreated when Redis lost
//! it (a server restarted without its data).

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::mpsc;

use super::scripts::{self, Place, GROUP};
use super::{Delivery, RedisInbox};
use crate::dingtalk::Inbound;
use crate::state::redis::RESPONSE_TIMEOUT;

/// Longest block of one read (below the connection's response timeout).
pub(crate) const READ_BLOCK: Duration = Duration::from_millis(1_000);
/// Entries asked for per read or claim.
const BATCH: usize = 32;
/// Claim pages looked at per round (the rest waits for the next round).
const CLAIM_PAGES: usize = 16;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

const _: () = assert!(READ_BLOCK.as_millis() < RESPONSE_TIMEOUT.as_millis());

/// Reads entries never delivered to any replica (after this consumer's own pending
/// entries, once, for a restart under the same replica id).
pub(crate) async fn read_new(inbox: Arc<RedisInbox>, tx: mpsc::UnboundedSender<Delivery>) {
    let mut from = "0";
    let mut backoff = BACKOFF_FIRST;
    while !tx.is_closed() {
        inbox.room_to_hold().await;
        let read: Result<StreamReadReply, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(inbox.redis.replica_id())
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(inbox.redis.key(&["inbox"]))
            .arg(from)
            .query_async(&mut inbox.reader.conn())
            .await;
        match read {
            Ok(reply) => {
                backoff = BACKOFF_FIRST;
                let entries: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                if from == "0" {
                    from = ">";
                }
                for entry in entries {
                    hand_over(&inbox, &tx, entry).await;
                }
            }
            Err(e) => backoff = after_error(&inbox, e, "read the shared inbox", backoff).await,
        }
    }
}

/// Every half lease, takes over the entries idle for a whole lease.
pub(crate) async fn claim_stale(inbox: Arc<RedisInbox>, tx: mpsc::UnboundedSender<Delivery>) {
    let lease = inbox.redis.lease();
    let mut tick = tokio::time::interval(lease / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        tick.tick().await;
        inbox.room_to_hold().await;
        let mut cursor = "0-0".to_string();
        for _ in 0..CLAIM_PAGES {
            let claimed: Result<StreamAutoClaimReply, redis::RedisError> = redis::cmd("XAUTOCLAIM")
                .arg(inbox.redis.key(&["inbox"]))
                .arg(GROUP)
                .arg(inbox.redis.replica_id())
                .arg(lease.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut inbox.redis.conn())
                .await;
            match claimed {
                Ok(reply) => {
                    for entry in reply.claimed {
                        tracing::info!(entry = %entry.id, "took over a message idle for a lease");
                        hand_over(&inbox, &tx, entry).await;
                    }
                    cursor = reply.next_stream_id;
                    if cursor == "0-0" {
                        break;
                    }
                }
                Err(e) => {
                    after_error(&inbox, e, "take over idle messages", BACKOFF_FIRST).await;
                    break;
                }
            }
        }
    }
}

/// Logs, recreates a lost group, sleeps; returns the next backoff.
async fn after_error(
    inbox: &RedisInbox,
    e: redis::RedisError,
    what: &str,
    backoff: Duration,
) -> Duration {
    if e.code() == Some("NOGROUP") {
        tracing::warn!("the shared inbox's group is gone (Redis lost its data?); recreating it");
        if let Err(e) = inbox.ensure_group().await {
            tracing::warn!(error = %e, "cannot recreate the shared inbox's group");
        }
    } else {
        tracing::warn!(error = %inbox.redis.error(e), "cannot {what}; retrying");
    }
    tokio::time::sleep(backoff).await;
    (backoff * 2).min(BACKOFF_MAX)
}

/// Sends a readable entry to the bot; an unreadable one (never written by this version)
/// is finished so it does not block its conversation.
async fn hand_over(inbox: &RedisInbox, tx: &mpsc::UnboundedSender<Delivery>, entry: StreamId) {
    let conversation: Option<String> = entry.get("conv");
    let seq: Option<u64> = entry.get("seq");
    // Entries written before epochs existed have none (their record's epoch is "").
    let epoch: String = entry.get("epoch").unwrap_or_default();
    let msg: Option<Inbound> = entry
        .get::<String>("msg")
        .and_then(|m| serde_json::from_str(&m).ok());
    match (msg, seq) {
        (Some(msg), Some(seq)) => {
            if !inbox.take_in(&msg.msg_id) {
                return;
            }
            let _ = tx.send(Delivery {
                msg,
                entry: entry.id,
                place: Place { epoch, seq },
            });
        }
        _ => {
            tracing::error!(entry = %entry.id, "unreadable shared inbox entry; dropping it");
            let conversation = conversation.unwrap_or_default();
            let place = Place {
                epoch,
                seq: seq.unwrap_or(0),
            };
            let finished = scripts::finish(&inbox.redis, &conversation, &entry.id, &place).await;
            if let Err(e) = finished {
                tracing::warn!(error = %e, "cannot drop the unreadable entry");
            }
        }
    }
}
