//! The Stream gateway (docs/dingtalk-protocol.md §1): `connections/open` hands out single-use
//! tickets valid `ticket_ttl_ms`; `/connect?ticket=` upgrades to a WebSocket that pushes real
//! frames (string headers, double-encoded `data`), sends SYSTEM pings expecting an echo, sends
//! `disconnect` and closes after the grace period, records every ACK, and (optionally)
//! redelivers un-ACKed bot messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::reply::{api_body, api_error, ok_json, req_str};
use super::state::{take, Conn, OutFrame, Sim, State as SimState};
use crate::clock::{now_ms, now_us};
use crate::dingtalk::wire;
use crate::random_hex::random_hex;

/// True when the `Accept` header explicitly lists `application/json` (parameters such as
/// `;q=0.9` allowed). `*/*` or no header is not enough: DingTalk then answers XML
/// (docs/dingtalk-protocol.md §1.1).
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.split(';').next().unwrap_or("").trim())
        .any(|media| media.eq_ignore_ascii_case("application/json"))
}

/// Escapes text for an XML element body.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `connections/open` success answer for a client that did not ask for JSON: HTTP 200
/// with the same endpoint and ticket as XML, so a JSON parser fails on it as it would
/// against DingTalk.
fn open_answer_xml(endpoint: &str, ticket: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OpenConnectionResponse><endpoint>{}</endpoint><ticket>{}</ticket></OpenConnectionResponse>",
        xml_text(endpoint),
        xml_text(ticket)
    );
    (
        [(header::CONTENT_TYPE, "application/xml;charset=utf-8")],
        body,
    )
        .into_response()
}

/// Checks the credentials and subscriptions of a `connections/open` body.
fn check_open_request(sim: &Sim, v: &Value) -> Result<(), Response> {
    let (id, secret) = (req_str(v, "clientId"), req_str(v, "clientSecret"));
    if id.is_none() || secret.is_none() {
        return Err(api_error(
            400,
            "MissingParameter",
            "clientId and clientSecret are required",
        ));
    }
    if id != Some(sim.opts.client_id.as_str()) || secret != Some(sim.opts.client_secret.as_str()) {
        return Err(api_error(
            401,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        ));
    }
    let subs_ok = v
        .get("subscriptions")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .all(|s| req_str(s, "type").is_some() && req_str(s, "topic").is_some())
        });
    if !subs_ok {
        return Err(api_error(
            400,
            "InvalidParameter",
            "subscriptions must be an array of {type, topic}",
        ));
    }
    Ok(())
}

/// Issues a ticket for an accepted open request `v` and records the request (secret
/// masked). Under the `bad_ticket` fault the ticket is never registered, so the gateway
/// refuses it; `open_500` fails the call instead.
fn issue_ticket(sim: &Sim, v: &Value) -> Result<String, Response> {
    let mut st = sim.lock();
    if take(&mut st.faults.open_500) {
        return Err(api_error(500, "InternalError", "injected failure"));
    }
    let ticket = format!("{}-{}-{}", random_hex(4), random_hex(2), random_hex(6));
    if !take(&mut st.faults.bad_ticket) {
        st.tickets.insert(ticket.clone(), (Instant::now(), false));
    }
    st.tickets_issued += 1;
    let mut rec = v.clone();
    rec["clientSecret"] = json!("***");
    st.opens
        .push(json!({"at_ms": now_ms(), "ticket": ticket, "request": rec}));
    Ok(ticket)
}

/// `POST /v1.0/gateway/connections/open`: JSON only for `Accept: application/json`,
/// otherwise the same answer as XML (errors are JSON either way).
pub async fn open(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let v = api_body(&body)?;
    check_open_request(&sim, &v)?;
    let ticket = issue_ticket(&sim, &v)?;
    let endpoint = format!("{}/connect", sim.base_url.replacen("http://", "ws://", 1));
    if accepts_json(&headers) {
        Ok(ok_json(json!({"endpoint": endpoint, "ticket": ticket})))
    } else {
        Ok(open_answer_xml(&endpoint, &ticket))
    }
}

/// Why `ticket` cannot open a connection now (unknown, used, or older than `ttl`), as
/// the 403 the handshake is refused with; None when it can. Looks only, never consumes.
fn ticket_refusal(st: &SimState, ticket: &str, ttl: Duration) -> Option<Response> {
    let why = match st.tickets.get(ticket) {
        None => "ticket is not valid",
        Some((_, true)) => "ticket already used",
        Some((issued, false)) if issued.elapsed() > ttl => "ticket expired",
        Some(_) => return None,
    };
    Some(api_error(403, "InvalidTicket", why))
}

/// `GET /connect?ticket=` (WebSocket upgrade). The ticket is single-use (docs/dingtalk-protocol.md
/// §1.2), and it is used up only by a request that really upgrades: a plain GET is refused and
/// leaves a good ticket good.
pub async fn connect(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(ticket) = q.get("ticket") else {
        return api_error(400, "MissingParameter", "ticket is required");
    };
    let ws = {
        let mut st = sim.lock();
        let ttl = Duration::from_millis(sim.opts.ticket_ttl_ms);
        if let Some(refused) = ticket_refusal(&st, ticket, ttl) {
            return refused;
        }
        let Ok(ws) = ws else {
            return api_error(400, "InvalidParameter", "WebSocket upgrade expected");
        };
        if let Some((_, used)) = st.tickets.get_mut(ticket) {
            *used = true;
        }
        ws
    };
    // The client's read-buffer size (see its docs): the ACKs this side reads are small.
    ws.read_buffer_size(crate::dingtalk::stream::WS_READ_BUFFER)
        .on_upgrade(move |socket| run_conn(sim, socket))
}

/// Builds one downstream frame as text.
fn frame(
    kind: &str,
    topic: &str,
    message_id: &str,
    conn_id: u64,
    data: String,
    app_id: &str,
) -> String {
    json!({"specVersion": "1.0", "type": kind,
        "headers": {"appId": app_id, "connectionId": format!("c-{conn_id}"), "contentType": "application/json",
                    "messageId": message_id, "time": now_ms().to_string(), "topic": topic},
        "data": data})
    .to_string()
}

/// "Never" for a timer that is off: a year from now.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// One simulated Stream connection: registered, then served until either side ends it,
/// with pings, scheduled or requested `disconnect`s, and the "zombie" fault.
async fn run_conn(sim: Arc<Sim>, socket: WebSocket) {
    let (id, mut rx, signals) = register_conn(&sim);
    deliver_pending(&sim);
    let (mut sink, mut stream) = socket.split();
    let ping_every = match sim.opts.ping_interval_ms {
        0 => FAR,
        n => Duration::from_millis(n),
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let disc_at = sim
        .opts
        .disconnect_every_ms
        .map(Duration::from_millis)
        .unwrap_or(FAR);
    let disc_timer = tokio::time::sleep(disc_at);
    tokio::pin!(disc_timer);
    let grace = Duration::from_millis(sim.opts.disconnect_grace_ms);
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        let close_sleep =
            tokio::time::sleep_until(close_at.unwrap_or_else(|| tokio::time::Instant::now() + FAR));
        tokio::select! {
            out = rx.recv() => match out {
                Some(out) => {
                    // Stamped at the socket, not when queued: the ACK latency is the bot's.
                    let at_us = now_us();
                    if sink.send(Message::text(out.text)).await.is_err() { break }
                    if let Some(m) = sim.lock().messages.get_mut(out.message) {
                        m.sent_us.push(at_us);
                    }
                }
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) => record_ack(&sim, id, t.as_str()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => if send_ping(&sim, id, &mut sink).await.is_err() { break },
            _ = &mut disc_timer, if close_at.is_none() => {
                if send_disconnect(&sim, id, &mut sink).await.is_err() { break }
                close_at = Some(tokio::time::Instant::now() + grace);
            },
            _ = signals.disconnect.notified(), if close_at.is_none() => {
                if send_disconnect(&sim, id, &mut sink).await.is_err() { break }
                close_at = Some(tokio::time::Instant::now() + grace);
            },
            _ = close_sleep => break,
            _ = signals.silence.notified() => {
                // Zombie: stop reading (no pongs, no ACKs) and stop writing.
                if let Some(c) = sim.lock().conns.get_mut(&id) { c.silent = true; c.tx = None; }
                tokio::time::sleep(Duration::from_secs(120)).await;
                break;
            },
        }
    }
    let _ = sink.close().await;
    if let Some(c) = sim.lock().conns.get_mut(&id) {
        c.closed_ms = Some(now_ms());
        c.tx = None;
    }
}

/// What the admin API can ask of a live connection.
struct ConnSignals {
    /// Go silent (the "zombie" fault).
    silence: Arc<Notify>,
    /// Send `disconnect` now.
    disconnect: Arc<Notify>,
}

/// Adds a new open connection to the simulator's state: its id, the queue of frames to
/// send on it, and its signals.
fn register_conn(sim: &Sim) -> (u64, mpsc::UnboundedReceiver<OutFrame>, ConnSignals) {
    let (tx, rx) = mpsc::unbounded_channel::<OutFrame>();
    let signals = ConnSignals {
        silence: Arc::new(Notify::new()),
        disconnect: Arc::new(Notify::new()),
    };
    let id = sim.next_id();
    sim.lock().conns.insert(
        id,
        Conn {
            id,
            opened_ms: now_ms(),
            closed_ms: None,
            tx: Some(tx),
            silence: signals.silence.clone(),
            disconnect: signals.disconnect.clone(),
            pings_sent: 0,
            pings_echoed: 0,
            pending_pings: Vec::new(),
            disconnect_sent: false,
            silent: false,
        },
    );
    (id, rx, signals)
}

/// A SYSTEM ping, remembered so its echo can be matched.
async fn send_ping(
    sim: &Sim,
    id: u64,
    sink: &mut (impl SinkExt<Message, Error = axum::Error> + Unpin),
) -> Result<(), axum::Error> {
    let opaque = format!("{}-{}", random_hex(4), random_hex(6));
    let mid = format!("ping_{}", random_hex(6));
    let body = json!({"opaque": opaque}).to_string();
    let text = frame(
        wire::TYPE_SYSTEM,
        wire::TOPIC_PING,
        &mid,
        id,
        body,
        &sim.opts.client_id,
    );
    if let Some(c) = sim.lock().conns.get_mut(&id) {
        c.pings_sent += 1;
        c.pending_pings.push(mid);
    }
    sink.send(Message::text(text)).await
}

async fn send_disconnect(
    sim: &Sim,
    id: u64,
    sink: &mut (impl SinkExt<Message, Error = axum::Error> + Unpin),
) -> Result<(), axum::Error> {
    if let Some(c) = sim.lock().conns.get_mut(&id) {
        c.disconnect_sent = true;
    }
    let mid = format!("disc_{}", random_hex(6));
    let data = json!({"reason": "connection is expired"}).to_string();
    sink.send(Message::text(frame(
        wire::TYPE_SYSTEM,
        wire::TOPIC_DISCONNECT,
        &mid,
        id,
        data,
        &sim.opts.client_id,
    )))
    .await
}

/// Records one upstream message (an ACK, or anything else the client wrote).
fn record_ack(sim: &Sim, conn: u64, text: &str) {
    // Stamped as read, before parsing and the simulator's lock (contended by its own work).
    let at_us = now_us();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|_| json!({"unparsable": text.len()}));
    let mid = v
        .pointer("/headers/messageId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut st = sim.lock();
    if let Some(c) = st.conns.get_mut(&conn) {
        if let Some(pos) = c.pending_pings.iter().position(|p| *p == mid) {
            c.pending_pings.remove(pos);
            c.pings_echoed += 1;
        }
    }
    if let Some(m) = st.messages.iter_mut().rev().find(|m| m.message_id == mid) {
        m.acked = true;
        m.acked_us.get_or_insert(at_us);
    }
    st.acks.push(
        json!({"connection": conn, "at_ms": at_us / 1000, "at_us": at_us, "messageId": mid, "ack": v}),
    );
}

/// Sends the bot message at `index` to a live connection (chosen at random). Returns the
/// connection id, or None when no connection is live (it stays pending).
pub fn deliver(sim: &Sim, index: usize) -> Option<u64> {
    let mut st = sim.lock();
    let live: Vec<u64> = st
        .conns
        .values()
        .filter(|c| c.tx.is_some() && !c.disconnect_sent && !c.silent)
        .map(|c| c.id)
        .collect();
    if live.is_empty() {
        return None;
    }
    use rand::seq::IndexedRandom;
    let conn = *live.choose(&mut rand::rng())?;
    let m = st.messages.get(index)?;
    let text = frame(
        wire::TYPE_CALLBACK,
        wire::TOPIC_BOT_MESSAGE,
        &m.message_id,
        conn,
        m.payload.to_string(),
        &sim.opts.client_id,
    );
    let sent = st
        .conns
        .get(&conn)
        .and_then(|c| c.tx.as_ref())
        .is_some_and(|tx| {
            tx.send(OutFrame {
                text,
                message: index,
            })
            .is_ok()
        });
    if !sent {
        return None;
    }
    let m = st.messages.get_mut(index)?;
    m.deliveries.push(conn);
    m.last_sent = Some(Instant::now());
    Some(conn)
}

/// Delivers every message that never reached a connection.
pub fn deliver_pending(sim: &Sim) {
    let pending: Vec<usize> = {
        let st = sim.lock();
        st.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.deliveries.is_empty())
            .map(|(i, _)| i)
            .collect()
    };
    for i in pending {
        if deliver(sim, i).is_none() {
            break;
        }
    }
}

/// Redelivers un-ACKed messages older than `after` (at most 5 deliveries each), forever.
pub async fn redeliver_loop(sim: Arc<Sim>, after: Duration) {
    let mut tick = tokio::time::interval((after / 4).max(Duration::from_millis(20)));
    loop {
        tick.tick().await;
        let due: Vec<usize> = {
            let st = sim.lock();
            st.messages
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    !m.acked
                        && m.deliveries.len() < 5
                        && m.last_sent.is_some_and(|t| t.elapsed() >= after)
                })
                .map(|(i, _)| i)
                .collect()
        };
        for i in due {
            deliver(&sim, i);
        }
        deliver_pending(&sim);
    }
}
