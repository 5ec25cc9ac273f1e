//! The inbox shared by several replicas of one bot (`state.backend: redis`): what the
//! local journal, dedupe filter and turn order do for one daemon, done in Redis for all.
//!
//! Path of a message:
//! 1. Intake ([`RedisInbox::admit`], one Lua script): `SET seen:{id} NX PX window` (the
//!    local dedupe window), `HINCRBY conv:{c} seq 1` (the message's arrival number in its
//!    conversation) and `XADD inbox`. The channel ACKs the frame only after the script
//!    answered, so an accepted message is in Redis before DingTalk forgets it (how durable
//!    Redis itself is, is the operator's AOF setting); an error (Redis down, timeout) means
//!    no ACK, and DingTalk delivers the frame again.
//! 2. Consumption ([`consumer`]): each replica reads the group `bot` as its own consumer
//!    (`XREADGROUP`, blocking at most [`consumer::READ_BLOCK`] on a connection of its own)
//!    and, every half lease, takes over entries idle for a whole lease (`XAUTOCLAIM`): those
//!    of a replica that stopped working on them.
//! 3. Holding ([`RedisInbox::hold`]): before working on an entry the replica takes the
//!    message's reply marker (`reply:{id}` = `h:{replica}`, expiring after the lease). A
//!    marker that says `sent` means the message was answered: it is only finished. A
//!    marker held by another replica means that replica is alive and working on it: it
//!    is left alone (and looked at again after the next lease). While a replica works on
//!    a message, a keeper task renews both its entry's idle time and its marker every
//!    third of the lease, so a slow turn is never taken over; a replica that dies stops
//!    renewing, and after one lease both its entries and its markers are free.
//! 4. Order ([`SharedTicket`]): a message waits until `conv:{c}.next` reaches its arrival
//!    number (polling with a capped backoff, woken early when a turn of this replica
//!    ends, bounded by `limits.queue.max_wait_ms` like the local line).
//! 5. Reply: right before a reply is sent the marker is checked again
//!    ([`RedisInbox::may_send`]); once DingTalk took it the marker becomes `sent` for the
//!    dedupe window ([`RedisInbox::replied`]).
//! 6. End (dropping the ticket): one script acks and deletes the entry and advances
//!    `next` from exactly this number (fencing: finishing twice changes nothing; a number
//!    finished before its turn is recorded and skipped when reached).
//! 7. Lost data: each conversation record has a random epoch made with it, and each entry
//!    carries (epoch, number). When Redis loses its data mid-turn (FLUSHALL, restart
//!    without AOF, failover to a lagging copy) the record is made again with a new epoch:
//!    a message of the old epoch finishes without touching it (else its old number would
//!    mark the new record's messages as done, and they would be dropped), and a waiting
//!    one is answered at once, out of line, rather than dropped.
//!
//! Invariants:
//! - no arrival number is lost: the intake script gives it back if `XADD` fails, so a
//!   conversation's line never waits for a number that has no message;
//! - a message is acked when its turn ends: after its reply went out, after a reply
//!   DingTalk refused was handed to this replica's background redelivery (as with the
//!   local journal, the same replica retries it and then sends the undelivered text), or
//!   when its marker said `sent`; a replica that could not confirm its marker before
//!   sending (Redis down for a lease, marker taken over) sends nothing and does not ack,
//!   so the entry is taken over after the lease;
//! - at most one visible reply per message: only the marker's holder sends, and a
//!   marker becomes free only when its holder stopped renewing it for a whole lease (or
//!   was lost with a Redis that restarted without its data). The rule for a failed send:
//!   the marker becomes `sent` only once DingTalk took a reply, and a message whose reply
//!   is being redelivered is acked, so no other replica starts it again;
//! - a clean stop reads no more, lets the turns in progress end, and waits for their
//!   last records (sent, finished) before the process exits;
//! - every wait and retry here is bounded in time; no loop spins without a sleep.
//!
//! Known gaps: a replica killed between DingTalk taking a reply and Redis recording it
//! has that message answered again by the replica taking it over (the local journal's
//! window, as short); one killed while a refused reply is being redelivered leaves that
//! message without a reply; a reply of several parts cut by a kill is sent whole again.
//!
//! Redis unavailable: intake fails (no ACK: DingTalk redelivers), reads and claims retry
//! with a capped backoff, a turn in progress finishes its model call but sends only if
//! its marker can be confirmed within a lease, otherwise its entry stays pending for a
//! replica to take over once Redis is back. The connection manager reconnects by itself.

mod consumer;
mod intake_health;
mod scripts;
mod turn_ended;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::inflight::InFlight;
use crate::backoff::capped_doubling;
use crate::config::RedisConfig;
use crate::dingtalk::ingress::Admitted;
use crate::dingtalk::Inbound;
use crate::state::redis::{RedisError, RedisState};
use scripts::Turn;
pub(crate) use scripts::{Marker, Place};

/// One stream entry handed to the bot.
pub(crate) struct Delivery {
    pub(crate) msg: Inbound,
    /// The stream entry id.
    pub(crate) entry: String,
    /// The message's arrival number in its conversation (1, 2, ...) and the epoch of the
    /// conversation record that number was given in.
    pub(crate) place: Place,
}

/// What this replica does with the messages it holds.
#[derive(Default)]
struct Held {
    /// The turn gave up its reply (marker not confirmed): the entry stays pending.
    abandoned: bool,
}

/// The shared inbox of one replica. Share it with `Arc`.
pub(crate) struct RedisInbox {
    redis: RedisState,
    /// A connection of its own for blocking reads (a blocked read would hold up every
    /// other command sent on the shared multiplexed connection).
    reader: RedisState,
    dedupe_ms: u64,
    /// Messages this replica holds, by id.
    held: Mutex<HashMap<String, Held>>,
    /// Fires when a turn of this replica ended (a waiting turn of its conversation may
    /// be due).
    turn_ended: turn_ended::TurnEnded,
    /// Records still being written in the background (a reply marked sent, a message
    /// finished): shutdown waits for them, so a clean stop never leaves a reply to be sent
    /// again by the replica that takes the message over.
    writes: InFlight,
    /// Whether intakes work (status and readiness).
    intake: intake_health::IntakeHealth,
}

/// Most messages one replica holds at once (running or waiting for their turn).
pub(crate) const MAX_HELD: usize = 256;

/// Longest wait between two checks of a waiting turn.
const TURN_POLL_MAX: Duration = Duration::from_millis(200);
/// First wait of a retried Redis step, doubled per try up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

impl RedisInbox {
    /// Opens the reader connection and makes sure the stream and its group exist.
    pub(crate) async fn open(
        redis: RedisState,
        cfg: &RedisConfig,
        dedupe_window: Duration,
    ) -> Result<Arc<RedisInbox>, RedisError> {
        let mut reader_cfg = cfg.clone();
        reader_cfg.replica_id = Some(redis.replica_id().to_string());
        let reader = RedisState::connect(&reader_cfg).await?;
        let inbox = Arc::new(RedisInbox {
            redis,
            reader,
            dedupe_ms: dedupe_window.as_millis() as u64,
            held: Mutex::new(HashMap::new()),
            turn_ended: Default::default(),
            writes: InFlight::default(),
            intake: Default::default(),
        });
        inbox.ensure_group().await?;
        Ok(inbox)
    }

    /// Starts reading and claiming; deliveries go to the returned receiver.
    pub(crate) fn start(self: &Arc<Self>) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(consumer::read_new(self.clone(), tx.clone()));
        tokio::spawn(consumer::claim_stale(self.clone(), tx));
        rx
    }

    /// Waits until this replica holds fewer than [`MAX_HELD`] messages (woken when a
    /// turn ends, checked at least every [`TURN_POLL_MAX`]).
    pub(crate) async fn room_to_hold(&self) {
        loop {
            let ended = self.turn_ended.any();
            if self.held().len() < MAX_HELD {
                return;
            }
            let _ = tokio::time::timeout(TURN_POLL_MAX, ended).await;
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the stream and the group when missing (from the stream's start, so no
    /// entry added before is skipped).
    async fn ensure_group(&self) -> Result<(), RedisError> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.redis.key(&["inbox"]))
            .arg(scripts::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.redis.conn())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(self.redis.error(e)),
            _ => Ok(()),
        }
    }

    /// Intake: dedupe, arrival number and stream entry in one script (see the module
    /// docs). `Ok` only once Redis answered.
    pub(crate) async fn admit(&self, msg: &Inbound) -> Result<Admitted, InboxError> {
        let payload = serde_json::to_string(msg).map_err(InboxError::Encode)?;
        let admitted = scripts::admit(
            &self.redis,
            &msg.msg_id,
            &msg.conversation_id,
            &payload,
            self.dedupe_ms,
        )
        .await;
        match &admitted {
            Ok(_) => self.intake.succeeded(),
            Err(e) => self.intake.failed(e),
        }
        let seq = admitted?;
        Ok(match seq {
            Some(_) => Admitted::New,
            None => Admitted::Duplicate,
        })
    }

    /// The kind of error (`OOM`, `timeout`, ...) that made an intake fail lately, while no
    /// intake succeeded since (see [`intake_health`]).
    pub(crate) fn intake_failing(&self) -> Option<String> {
        self.intake.failing()
    }

    /// Counts `msg_id` as held here from its delivery on; false when it is already (a
    /// takeover of a message this replica works on): it is then not delivered again.
    fn take_in(&self, msg_id: &str) -> bool {
        let mut held = self.held();
        if held.contains_key(msg_id) {
            return false;
        }
        held.insert(msg_id.to_string(), Held::default());
        true
    }

    /// Takes a delivered entry into work: `Some` when this replica now holds its reply;
    /// `None` when another live replica holds it, or it was answered (then it is finished
    /// here). Every delivery ends in a ticket, dropped when its turn ends.
    pub(crate) async fn hold(self: &Arc<Self>, d: &Delivery) -> Option<SharedTicket> {
        let marker = scripts::take_marker(&self.redis, &d.msg.msg_id).await;
        let ticket = SharedTicket {
            inbox: self.clone(),
            msg_id: d.msg.msg_id.clone(),
            conversation: d.msg.conversation_id.clone(),
            entry: d.entry.clone(),
            place: d.place.clone(),
            keeper: None,
            finished_elsewhere: false,
        };
        match marker {
            Ok(Marker::Mine) => Some(ticket.kept()),
            Ok(Marker::Sent) => {
                tracing::info!(msg_id = %d.msg.msg_id, "taken-over message was answered already; finishing it");
                drop(ticket);
                None
            }
            Ok(Marker::Held) => {
                tracing::debug!(msg_id = %d.msg.msg_id, "message held by another live replica");
                self.abandon(&d.msg.msg_id);
                None
            }
            Err(e) => {
                tracing::warn!(msg_id = %d.msg.msg_id, error = %e, "cannot take the reply marker; the message stays pending");
                self.abandon(&d.msg.msg_id);
                None
            }
        }
    }

    /// True when this replica gave up `msg_id`'s reply (see [`RedisInbox::may_send`]).
    pub(crate) fn gave_up(&self, msg_id: &str) -> bool {
        self.held().get(msg_id).is_some_and(|h| h.abandoned)
    }

    /// Waits until the background records are written, at most `limit`. True when so.
    pub(crate) async fn writes_drained(&self, limit: Duration) -> bool {
        self.writes.drained(limit).await
    }

    fn abandon(&self, msg_id: &str) {
        if let Some(h) = self.held().get_mut(msg_id) {
            h.abandoned = true;
        }
    }

    /// Confirms, right before a reply is sent, that this replica still holds `msg_id`'s
    /// reply (retrying for at most one lease while Redis does not answer). False means:
    /// send nothing; the entry stays pending and is taken over after the lease.
    pub(crate) async fn may_send(&self, msg_id: &str) -> bool {
        let lease = self.redis.lease();
        let marker = self
            .retry("confirm the reply marker", msg_id, lease, || {
                scripts::take_marker(&self.redis, msg_id)
            })
            .await;
        if marker == Some(Marker::Mine) {
            return true;
        }
        tracing::warn!(msg_id, ?marker, "reply marker not this replica's (taken over, or Redis did not answer within the lease): not replying; the message stays pending for a replica to take over");
        self.abandon(msg_id);
        false
    }

    /// Records that DingTalk took `msg_id`'s reply: its marker becomes `sent` (retried in
    /// the background while Redis does not answer, for at most the dedupe window).
    pub(crate) fn replied(self: &Arc<Self>, msg_id: &str) {
        let me = self.clone();
        let msg_id = msg_id.to_string();
        let writing = self.writes.enter();
        tokio::spawn(async move {
            let _writing = writing;
            let keep_ms = me.dedupe_ms;
            let (id, within) = (msg_id.clone(), Duration::from_millis(keep_ms));
            me.retry("mark the reply sent", &msg_id, within, || {
                scripts::mark_sent(&me.redis, &id, keep_ms)
            })
            .await;
        });
    }

    /// Runs `step` until it succeeds or `within` passed (capped doubling waits between
    /// tries); `None` when it never did (what it would have recorded is then left to a
    /// replica that takes the entry over).
    async fn retry<T, F, Fut>(
        &self,
        what: &str,
        msg_id: &str,
        within: Duration,
        mut step: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        for attempt in 0.. {
            let wait = capped_doubling(RETRY_FIRST, RETRY_MAX, attempt);
            match step().await {
                Ok(v) => return Some(v),
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(msg_id, error = %e, "cannot {what} yet; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::error!(msg_id, error = %e, "gave up trying to {what}");
                    break;
                }
            }
        }
        None
    }
}

/// Why a message could not be put in the shared inbox (it is then not ACKed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InboxError {
    #[error("cannot encode the message for the shared inbox: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("shared inbox: {0}")]
    Redis(#[from] RedisError),
}

/// A held message's place in its conversation's line across replicas. Dropping it ends
/// the message (ack + turn moves on) unless its reply was given up (see
/// [`RedisInbox::may_send`]).
pub(crate) struct SharedTicket {
    inbox: Arc<RedisInbox>,
    msg_id: String,
    conversation: String,
    entry: String,
    place: Place,
    keeper: Option<tokio::task::JoinHandle<()>>,
    /// The conversation's line had moved past this message when its turn was checked.
    finished_elsewhere: bool,
}

impl SharedTicket {
    /// Starts renewing the entry and the marker every third of the lease.
    fn kept(mut self) -> SharedTicket {
        let redis = self.inbox.redis.clone();
        let (msg_id, entry) = (self.msg_id.clone(), self.entry.clone());
        self.keeper = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(redis.lease() / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match scripts::keep(&redis, &msg_id, &entry).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(%msg_id, "message taken over by another replica while in work")
                    }
                    Err(e) => {
                        tracing::warn!(%msg_id, error = %e, "cannot renew the message's lease")
                    }
                }
            }
        }));
        self
    }

    /// Takes the message out of its conversation's line while this replica still holds
    /// it (its busy reply on the way): the turns behind it, on every replica, go on. Its
    /// entry stays pending until the ticket is dropped. If this replica dies meanwhile,
    /// the one that takes the message over finds the line past it (finished elsewhere)
    /// and sends nothing: the busy reply is lost with its replica, like a busy reply
    /// DingTalk would not take. When Redis does not answer, the line waits for the
    /// message's end as before.
    pub(crate) async fn leave_line(&mut self) {
        let left = scripts::leave_line(&self.inbox.redis, &self.conversation, &self.place).await;
        if let Err(e) = left {
            tracing::warn!(msg_id = %self.msg_id, error = %e, "cannot take the message out of its conversation's line; the line waits for its end");
            return;
        }
        self.inbox.turn_ended.ended(&self.conversation);
    }

    /// True when the message was ended by another replica (see [`SharedTicket::wait_turn`]):
    /// the turn then does nothing more.
    pub(crate) fn finished_elsewhere(&self) -> bool {
        self.finished_elsewhere
    }

    /// Waits until every earlier message of the conversation has ended, at most `limit`
    /// (true at once, with [`SharedTicket::finished_elsewhere`] set, when the line is past
    /// this message already).
    pub(crate) async fn wait_turn(&mut self, limit: Duration) -> bool {
        let inbox = &self.inbox;
        let signal = inbox.turn_ended.listen(&self.conversation);
        let due = async {
            for attempt in 0.. {
                let wait = capped_doubling(RETRY_FIRST, TURN_POLL_MAX, attempt);
                let ended = signal.notified();
                match scripts::turn(&inbox.redis, &self.conversation, &self.place).await {
                    Ok(Turn::Past) => {
                        // Another replica ended it while this one was away (stalled past
                        // the lease): nothing left to do here.
                        self.finished_elsewhere = true;
                        return;
                    }
                    Ok(Turn::Due) => return,
                    Ok(Turn::Lost) => {
                        tracing::warn!(msg_id = %self.msg_id, "the conversation's order record was lost (Redis lost its data?); answering out of line");
                        return;
                    }
                    Ok(Turn::Waiting) => {}
                    Err(e) => {
                        tracing::warn!(msg_id = %self.msg_id, error = %e, "cannot read the conversation's turn")
                    }
                }
                let _ = tokio::time::timeout(wait, ended).await;
            }
        };
        tokio::time::timeout(limit, due).await.is_ok()
    }
}

impl Drop for SharedTicket {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        let abandoned = self
            .inbox
            .held()
            .remove(&self.msg_id)
            .is_some_and(|h| h.abandoned);
        if abandoned {
            return;
        }
        let inbox = self.inbox.clone();
        let (msg_id, conversation, entry, place) = (
            std::mem::take(&mut self.msg_id),
            std::mem::take(&mut self.conversation),
            std::mem::take(&mut self.entry),
            self.place.clone(),
        );
        let writing = inbox.writes.enter();
        tokio::spawn(async move {
            let _writing = writing;
            let within = Duration::from_millis(inbox.dedupe_ms);
            let finished = inbox
                .retry("finish the message", &msg_id, within, || {
                    scripts::finish(&inbox.redis, &conversation, &entry, &place)
                })
                .await;
            if finished == Some(None) {
                tracing::warn!(%msg_id, "the conversation's order record was lost (Redis lost its data?); finished without touching the new one");
            }
            inbox.turn_ended.ended(&conversation);
        });
    }
}

#[cfg(test)]
mod tests;
