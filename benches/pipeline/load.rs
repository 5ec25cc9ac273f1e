//! Load generation and the per-message record: inject group messages through the
//! simulator's admin API at a fixed rate, then read back from the simulator when each
//! frame was sent, when its ACK came, and when (and with what) the bot replied.
//!
//! All times are the simulator's clock (Unix microseconds), so the bench's own HTTP
//! client does not count in any latency.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clawdbot::sim::client::SimClient;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stack::{BUSY_TEXT, FALLBACK_TEXT};

/// How often the outbox is polled while waiting for replies.
const POLL: Duration = Duration::from_millis(20);
/// Injections in flight at most: more would open a connection each and overflow the
/// simulator's accept queue (connection resets at 2 000 msg/s); a late injection shows as
/// an achieved rate below the offered one.
const MAX_INJECTS_IN_FLIGHT: usize = 32;
/// How long ACKs still missing once the replies are in are waited for.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// One message as injected.
#[derive(Debug, Clone)]
pub struct Injected {
    pub msg_id: String,
    /// The session id of its webhook: the outbox names it on the reply.
    pub session: String,
}

/// What the bot sent back for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Busy,
    Fallback,
    /// No reply within the wait.
    Missing,
}

/// One message's timeline (simulator clock, Unix microseconds).
#[derive(Debug, Clone)]
pub struct Turn {
    /// The frame was handed to the bot's connection.
    pub sent_us: Option<u64>,
    pub acked_us: Option<u64>,
    pub reply_us: Option<u64>,
    pub outcome: Outcome,
}

impl Turn {
    /// Frame sent -> ACK received, in milliseconds.
    pub fn ack_ms(&self) -> Option<f64> {
        span_ms(self.sent_us?, self.acked_us?)
    }

    /// Frame sent -> reply in the outbox, in milliseconds.
    pub fn reply_ms(&self) -> Option<f64> {
        span_ms(self.sent_us?, self.reply_us?)
    }
}

fn span_ms(from_us: u64, to_us: u64) -> Option<f64> {
    to_us.checked_sub(from_us).map(|us| us as f64 / 1000.0)
}

/// A reply found in the outbox.
#[derive(Debug, Clone)]
struct Reply {
    at_us: u64,
    outcome: Outcome,
}

/// GETs an admin path, retrying twice: the simulator closes a kept-alive connection idle
/// for its header timeout, and a request sent on it at that moment fails (it is a read, so
/// asking again is safe).
async fn get(sim: &SimClient, path: &str) -> Result<Value> {
    let mut tries = 0;
    loop {
        match sim.get(path).await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 2 => return Err(anyhow!(e)),
            Err(_) => tries += 1,
        }
    }
}

/// Injects one group message into `conversation`.
pub async fn inject(sim: &SimClient, conversation: &str, text: &str) -> Result<Injected> {
    let req = json!({"text": text, "conversation_type": "group", "conversation_id": conversation,
                     "sender_staff_id": "0423001", "sender_nick": "Bench"});
    // A failed inject is tried again: the simulator drops idle kept-alive connections when
    // it is at its connection cap, and a request caught on one fails unsent. A repeat that
    // did get through is a distinct message (new ids) that is not measured: harmless.
    let mut tries = 0;
    let v = loop {
        match sim.inject(&req).await {
            Ok(v) => break v,
            Err(e) if tries >= 2 => return Err(anyhow!(e)),
            Err(_) => tries += 1,
        }
    };
    let msg_id = v["msgId"].as_str().unwrap_or_default().to_string();
    let session = v["sessionWebhook"]
        .as_str()
        .and_then(|u| u.split("session=").nth(1))
        .unwrap_or_default()
        .to_string();
    if msg_id.is_empty() || session.is_empty() {
        bail!("the simulator's inject answer lacks msgId or sessionWebhook: {v}");
    }
    Ok(Injected { msg_id, session })
}

/// Injects `count` messages at `rate` per second on a fixed schedule (message `i` is due
/// at `i / rate` s, whatever happened to earlier ones), message `i` into
/// `conversation(i)`. Returns them in schedule order.
pub async fn inject_at_rate(
    sim: &SimClient,
    rate: f64,
    count: usize,
    conversation: impl Fn(usize) -> String,
) -> Result<Vec<Injected>> {
    if rate <= 0.0 {
        bail!("the injection rate must be positive, not {rate}");
    }
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let connections = Arc::new(Semaphore::new(MAX_INJECTS_IN_FLIGHT));
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (sim, cid) = (sim.clone(), conversation(i));
        let slot = connections.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let injected = inject(&sim, &cid, &format!("bench message {i}")).await;
            drop(slot);
            (i, injected)
        });
    }
    let mut out: Vec<Option<Injected>> = vec![None; count];
    while let Some(joined) = tasks.join_next().await {
        let (i, injected) = joined.context("an inject task panicked")?;
        out[i] = Some(injected?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The outbox's last sequence number: replies to messages injected after this call have
/// higher ones (pass it as `since` to skip older entries).
pub async fn outbox_seq(sim: &SimClient) -> Result<u64> {
    // An empty page (nothing after the largest seq) with the last seq: fetching the whole
    // outbox of a long run held the simulator's lock for a large part of a measuring
    // window, starving the bots under test (replicas utilization 88-91 % in the full run,
    // 99 % alone).
    let v = get(sim, &format!("/_sim/outbox?since={}", u64::MAX)).await?;
    v["last_seq"]
        .as_u64()
        .ok_or_else(|| anyhow!("the simulator's outbox page lacks last_seq: {v}"))
}

/// Waits (at most `timeout`) for a reply to every message in `sent` among the outbox
/// entries after `since`, then returns each message's timeline in the same order.
pub async fn timelines(
    sim: &SimClient,
    sent: &[Injected],
    since: u64,
    timeout: Duration,
) -> Result<Vec<Turn>> {
    let replies = wait_replies(sim, sent, since, timeout).await?;
    let deliveries = wait_acks(sim, sent, ACK_WAIT).await?;
    Ok(sent
        .iter()
        .map(|m| {
            let (sent_us, acked_us) = deliveries.get(&m.msg_id).copied().unwrap_or_default();
            let reply = replies.get(&m.session);
            Turn {
                sent_us,
                acked_us,
                reply_us: reply.map(|r| r.at_us),
                outcome: reply.map_or(Outcome::Missing, |r| r.outcome),
            }
        })
        .collect())
}

/// Polls the outbox (entries after `since`) until every session of `sent` has its first
/// reply or `timeout` passes; returns the replies found, by session.
async fn wait_replies(
    sim: &SimClient,
    sent: &[Injected],
    mut since: u64,
    timeout: Duration,
) -> Result<HashMap<String, Reply>> {
    let mut wanted: HashSet<&str> = sent.iter().map(|m| m.session.as_str()).collect();
    let mut found = HashMap::new();
    let deadline = Instant::now() + timeout;
    while !wanted.is_empty() && Instant::now() < deadline {
        let page = get(sim, &format!("/_sim/outbox?since={since}")).await?;
        for entry in page["entries"].as_array().into_iter().flatten() {
            since = since.max(entry["seq"].as_u64().unwrap_or(0));
            let session = entry["session"].as_str().unwrap_or_default();
            if let Some(reply) = reply_of(entry).filter(|_| wanted.remove(session)) {
                found.insert(session.to_string(), reply);
            }
        }
        if !wanted.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(found)
}

/// The time and kind of one outbox entry (None without a time).
fn reply_of(entry: &Value) -> Option<Reply> {
    let at_us = entry["at_us"].as_u64()?;
    let text = entry["text"].as_str().unwrap_or_default();
    let outcome = if text.contains(BUSY_TEXT) {
        Outcome::Busy
    } else if text.contains(FALLBACK_TEXT) {
        Outcome::Fallback
    } else {
        Outcome::Answered
    };
    Some(Reply { at_us, outcome })
}

/// Polls the simulator's message list until every message of `sent` has its ACK (or
/// `timeout` passes), so no ACK still in flight is left out of the figures; returns the
/// first delivery and ACK time of every message, by msgId.
async fn wait_acks(
    sim: &SimClient,
    sent: &[Injected],
    timeout: Duration,
) -> Result<HashMap<String, (Option<u64>, Option<u64>)>> {
    let deadline = Instant::now() + timeout;
    loop {
        // A look first waits a poll: the last ACKs are still in flight when the injecting
        // ends, and the simulator's answer (every message it holds) takes its lock long
        // enough to make it read them late.
        tokio::time::sleep(POLL).await;
        let times = delivery_times(sim).await?;
        let all_acked = sent
            .iter()
            .all(|m| times.get(&m.msg_id).is_some_and(|(_, ack)| ack.is_some()));
        if all_acked || Instant::now() >= deadline {
            return Ok(times);
        }
    }
}

/// Each message of `sent`'s frame -> ACK time in ms, in the same order (None: no ACK),
/// once every one has its ACK or [`ACK_WAIT`] passed.
pub async fn ack_times(sim: &SimClient, sent: &[Injected]) -> Result<Vec<Option<f64>>> {
    let times = wait_acks(sim, sent, ACK_WAIT).await?;
    Ok(sent
        .iter()
        .map(|m| match times.get(&m.msg_id) {
            Some((Some(sent_us), Some(acked_us))) => span_ms(*sent_us, *acked_us),
            _ => None,
        })
        .collect())
}

/// First delivery and first ACK time of every injected message, by msgId.
async fn delivery_times(sim: &SimClient) -> Result<HashMap<String, (Option<u64>, Option<u64>)>> {
    let v = get(sim, "/_sim/messages").await?;
    let list = v["messages"]
        .as_array()
        .ok_or_else(|| anyhow!("/_sim/messages has no `messages` list"))?;
    Ok(list
        .iter()
        .map(|m| {
            let id = m["msgId"].as_str().unwrap_or_default().to_string();
            let sent = m["sent_us"].get(0).and_then(Value::as_u64);
            (id, (sent, m["acked_us"].as_u64()))
        })
        .collect())
}

/// Waits (at most `timeout`) until `m` has a reply after `since`; true when it has.
pub async fn wait_reply(
    sim: &SimClient,
    m: &Injected,
    since: u64,
    timeout: Duration,
) -> Result<bool> {
    let found = wait_replies(sim, std::slice::from_ref(m), since, timeout).await?;
    Ok(!found.is_empty())
}

/// How many turns ended with `outcome`.
pub fn count(turns: &[Turn], outcome: Outcome) -> usize {
    turns.iter().filter(|t| t.outcome == outcome).count()
}

/// Messages per second between the first and the last of `times_us` (None below 2).
pub fn rate_per_s(times_us: impl IntoIterator<Item = u64>) -> Option<f64> {
    let (mut n, mut lo, mut hi) = (0usize, u64::MAX, 0u64);
    for t in times_us {
        n += 1;
        lo = lo.min(t);
        hi = hi.max(t);
    }
    (n >= 2 && hi > lo).then(|| (n - 1) as f64 / ((hi - lo) as f64 / 1e6))
}
