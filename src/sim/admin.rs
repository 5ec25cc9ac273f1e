//! The admin API under `/_sim/...`: inject messages, read what the bot sent and ACKed,
//! inspect connections and cards, set faults. JSON in, JSON out; bad input → 400.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::gateway;
use super::sign::callback_signature;
use super::state::{frame_id, Faults, Injected, Session, Sim};
use crate::clock::{now_ms, now_us};
use crate::random_hex::random_hex;

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn body_or_empty(bytes: &[u8]) -> Result<Value, Response> {
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad("body must be a JSON object")),
    }
}

/// The docs/dingtalk-protocol.md §2 payload of an injected message. Fields of the request (all
/// optional): `text`, `msgtype`, `conversation_id`, `conversation_type` (`group`|`direct`),
/// `conversation_title` (default: the title the group was given before, else `Sim Group`), `sender_staff_id`, `sender_nick`, `content` (raw content object),
/// and, to play a hostile or broken DingTalk, `session_webhook` (any string) and
/// `session_webhook_expired_time` (any JSON value) in place of the simulator's own.
/// An injected message the simulator cannot build.
#[derive(Debug, thiserror::Error)]
enum InjectError {
    #[error("conversation_type `{0}` is not group or direct")]
    ConversationType(String),
}

fn build_payload(sim: &Sim, r: &Value, msg_id: &str, session: &str) -> Result<Value, InjectError> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).filter(|x| !x.is_empty());
    let group = match s("conversation_type").unwrap_or("direct") {
        "group" | "2" => true,
        "direct" | "1" => false,
        other => return Err(InjectError::ConversationType(other.to_string())),
    };
    let msgtype = s("msgtype").unwrap_or("text");
    let text = s("text").unwrap_or("");
    let staff = s("sender_staff_id").unwrap_or("0423001");
    let cid = s("conversation_id").map(str::to_string).unwrap_or_else(|| {
        if group {
            "cidSimGroup0001==".to_string()
        } else {
            format!("cidSimDirect{staff}==")
        }
    });
    let now = now_ms();
    let mut p = json!({
        "msgId": msg_id, "msgtype": msgtype, "createAt": now,
        "conversationType": if group { "2" } else { "1" }, "conversationId": cid,
        "senderId": format!("$:LWCP_v1:${staff}"), "senderNick": s("sender_nick").unwrap_or("Sim User"),
        "senderStaffId": staff, "senderCorpId": "dingsimcorp", "chatbotUserId": "$:LWCP_v1:$simbot",
        "chatbotCorpId": "dingsimcorp", "robotCode": sim.opts.robot_code, "isAdmin": false,
        "isInAtList": group, "atUsers": if group { json!([{"dingtalkId": "$:LWCP_v1:$simbot"}]) } else { json!([]) },
        "sessionWebhook": format!("{}/robot/sendBySession?session={session}", sim.base_url),
        "sessionWebhookExpiredTime": now + sim.opts.session_ttl_ms,
    });
    if group {
        let mut state = sim.lock();
        let title = match s("conversation_title") {
            Some(t) => t.to_string(),
            None => state
                .group_titles
                .get(&cid)
                .cloned()
                .unwrap_or_else(|| "Sim Group".to_string()),
        };
        state.group_titles.insert(cid.clone(), title.clone());
        p["conversationTitle"] = json!(title);
    }
    if let Some(url) = s("session_webhook") {
        p["sessionWebhook"] = json!(url);
    }
    if let Some(expiry) = r.get("session_webhook_expired_time") {
        p["sessionWebhookExpiredTime"] = expiry.clone();
    }
    if let Some(c) = r.get("content").filter(|c| c.is_object()) {
        p["content"] = c.clone();
    } else {
        match msgtype {
            // Groups: DingTalk strips the @bot and leaves a leading space.
            "text" => {
                p["text"] =
                    json!({"content": if group { format!(" {text}") } else { text.to_string() }})
            }
            "audio" => p["content"] = json!({"downloadCode": random_hex(8), "recognition": text}),
            "richText" => {
                p["content"] = json!({"richText": [{"text": text}, {"type": "picture", "downloadCode": random_hex(8)}]})
            }
            "picture" => {
                p["content"] =
                    json!({"downloadCode": random_hex(8), "pictureDownloadCode": random_hex(8)})
            }
            "video" => {
                p["content"] =
                    json!({"downloadCode": random_hex(8), "duration": "5", "videoType": "mp4"})
            }
            "file" => {
                p["content"] = json!({"downloadCode": random_hex(8), "fileName": "a.zip", "fileId": random_hex(4), "spaceId": "1"})
            }
            _ => p["content"] = json!({"unknownMsgType": "unsupported message"}),
        }
    }
    Ok(p)
}

/// How long `inject` waits for a bot in HTTP callback mode unless `callback_timeout_ms`
/// says otherwise.
pub const CALLBACK_TIMEOUT_MS: u64 = 10_000;

/// POSTs `payload` to a bot in HTTP callback mode (docs/dingtalk-protocol.md §6) and waits at most
/// `timeout` for its answer. Returns the HTTP status (0 when none came) and, when none came, why
/// (a timeout is named as one), so a hung bot never hangs the admin call.
async fn post_callback(
    url: &str,
    ts: &str,
    sign: &str,
    payload: &Value,
    timeout: Duration,
) -> (u16, Option<String>) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return (0, Some(format!("cannot build an HTTP client: {e}"))),
    };
    let sent = client
        .post(url)
        .header("timestamp", ts)
        .header("sign", sign)
        .json(payload)
        .send()
        .await;
    match sent {
        Ok(resp) => (resp.status().as_u16(), None),
        Err(e) if e.is_timeout() => (
            0,
            Some(format!(
                "timeout: the bot did not answer within {} ms",
                timeout.as_millis()
            )),
        ),
        Err(e) => (0, Some(format!("callback failed: {e}"))),
    }
}

/// `POST /_sim/messages`: inject a user message. With `callback_url` it is POSTed there
/// (HTTP mode, signed with the app secret) instead of pushed over the stream; the answer
/// then carries `callback_status` and, when the bot did not answer within
/// `callback_timeout_ms` (default [`CALLBACK_TIMEOUT_MS`]) or could not be reached,
/// `callback_error`.
pub async fn inject(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let r = match body_or_empty(&body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let msg_id = format!("msg{}==", random_hex(10));
    let session = random_hex(16);
    let payload = match build_payload(&sim, &r, &msg_id, &session) {
        Ok(p) => p,
        Err(e) => return bad(&e.to_string()),
    };
    let cid = payload["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let expires = payload["sessionWebhookExpiredTime"].as_u64().unwrap_or(0);
    let message_id = frame_id();
    let index = {
        let mut st = sim.lock();
        st.sessions.insert(
            session.clone(),
            Session {
                conversation_id: cid.clone(),
                expires_ms: expires,
            },
        );
        st.messages.push(Injected::new(
            message_id.clone(),
            msg_id.clone(),
            payload.clone(),
        ));
        st.messages.len() - 1
    };
    let mut doc = json!({"messageId": message_id, "msgId": msg_id, "conversationId": cid,
        "sessionWebhook": payload["sessionWebhook"], "payload": payload});
    if let Some(url) = r.get("callback_url").and_then(Value::as_str) {
        if let Some(m) = sim.lock().messages.get_mut(index) {
            m.deliveries.push(0);
            m.sent_us.push(now_us());
            m.acked = true;
        }
        let ts = r
            .get("timestamp_ms")
            .and_then(Value::as_u64)
            .unwrap_or_else(now_ms)
            .to_string();
        let sign = r
            .get("sign")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| callback_signature(&ts, &sim.opts.client_secret));
        let timeout = Duration::from_millis(
            r.get("callback_timeout_ms")
                .and_then(Value::as_u64)
                .unwrap_or(CALLBACK_TIMEOUT_MS),
        );
        let (status, error) = post_callback(url, &ts, &sign, &payload, timeout).await;
        doc["callback_status"] = json!(status);
        if let Some(e) = error {
            doc["callback_error"] = json!(e);
        }
    } else {
        doc["delivered_to"] = json!(gateway::deliver(&sim, index));
    }
    Json(doc).into_response()
}

/// `POST /_sim/messages/{messageId}/redeliver`: push the same frame again (even if ACKed).
/// With the body `{"new_message_id": true}` the same payload (same `msgId`) goes out as a
/// new message under a fresh stream `messageId`, as a redelivery after a reconnect does;
/// only `msgId` dedupe catches that (docs/dingtalk-protocol.md §1.4). Answers `delivered_to` and
/// `messageId`.
pub async fn redeliver(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let r = match body_or_empty(&body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let fresh = r.get("new_message_id").and_then(Value::as_bool) == Some(true);
    let index = {
        let mut st = sim.lock();
        let found = st
            .messages
            .iter()
            .position(|m| m.message_id == id || m.msg_id == id);
        match (found, fresh) {
            (Some(i), true) => {
                let m = &st.messages[i];
                let copy = Injected::new(frame_id(), m.msg_id.clone(), m.payload.clone());
                st.messages.push(copy);
                Some(st.messages.len() - 1)
            }
            (found, _) => found,
        }
    };
    let Some(i) = index else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such message"})),
        )
            .into_response();
    };
    let delivered_to = gateway::deliver(&sim, i);
    let message_id = sim.lock().messages[i].message_id.clone();
    Json(json!({"delivered_to": delivered_to, "messageId": message_id})).into_response()
}

/// `GET /_sim/outbox?since=N`: entries with seq > N.
pub async fn outbox(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let st = sim.lock();
    // An entry's seq is its position + 1 (see `record_out`): the page starts at `since`
    // without a pass over the older entries, so polling a long run's outbox stays cheap
    // (the lock it holds delays every delivery, ACK and reply of the simulator).
    let skip = usize::try_from(since).unwrap_or(usize::MAX);
    let entries: Vec<&Value> = st.outbox.iter().skip(skip).collect();
    Json(json!({"entries": entries, "last_seq": st.outbox.len()})).into_response()
}

/// `GET /_sim/acks`.
pub async fn acks(State(sim): State<Arc<Sim>>) -> Response {
    // Cloned under the lock, serialized after it (see `messages`).
    let acks = sim.lock().acks.clone();
    Json(json!({"acks": acks})).into_response()
}

/// `GET /_sim/messages`: injected messages and their delivery/ACK state; `sent_us` (one
/// per delivery, when its frame was written to the socket) and `acked_us` (when the first
/// ACK was read from it) are Unix microseconds.
pub async fn messages(State(sim): State<Arc<Sim>>) -> Response {
    /// One message's state, copied out so the lock is not held while the (long) answer is
    /// built: the gateway's connection tasks take the same lock after every frame they
    /// write, and one that waits here reads its ACKs late (a bench that polled this list
    /// during a run saw its last ACK stamped up to 100 ms late).
    #[derive(serde::Serialize)]
    struct MessageState {
        #[serde(rename = "messageId")]
        message_id: String,
        #[serde(rename = "msgId")]
        msg_id: String,
        deliveries: Vec<u64>,
        sent_us: Vec<u64>,
        acked: bool,
        acked_us: Option<u64>,
    }
    #[derive(serde::Serialize)]
    struct Messages {
        messages: Vec<MessageState>,
    }
    let messages: Vec<MessageState> = sim
        .lock()
        .messages
        .iter()
        .map(|m| MessageState {
            message_id: m.message_id.clone(),
            msg_id: m.msg_id.clone(),
            deliveries: m.deliveries.clone(),
            sent_us: m.sent_us.clone(),
            acked: m.acked,
            acked_us: m.acked_us,
        })
        .collect();
    // Serialized off the async workers: a long list takes milliseconds, and a connection
    // task queued behind it on the same worker would read its ACKs late.
    let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&Messages { messages }));
    match body.await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /_sim/connections`.
pub async fn connections(State(sim): State<Arc<Sim>>) -> Response {
    let st = sim.lock();
    let conns: Vec<Value> = st
        .conns
        .values()
        .map(|c| {
            json!({"id": c.id, "opened_ms": c.opened_ms, "closed_ms": c.closed_ms, "live": c.tx.is_some(),
                "pings_sent": c.pings_sent, "pings_echoed": c.pings_echoed, "disconnect_sent": c.disconnect_sent,
                "silent": c.silent})
        })
        .collect();
    let tickets: Vec<&Value> = st.opens.iter().map(|o| &o["ticket"]).collect();
    Json(json!({"connections": conns, "tickets_issued": st.tickets_issued, "tickets": tickets, "opens": st.opens}))
        .into_response()
}

/// `POST /_sim/connections/{id}/disconnect` or `/silence` (`id` = `all` for every live one).
pub async fn connection_action(
    State(sim): State<Arc<Sim>>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let st = sim.lock();
    let targets: Vec<_> = st
        .conns
        .values()
        .filter(|c| c.tx.is_some() && (id == "all" || id == c.id.to_string()))
        .map(|c| (c.id, c.disconnect.clone(), c.silence.clone()))
        .collect();
    drop(st);
    for (_, disc, sil) in &targets {
        match action.as_str() {
            "disconnect" => disc.notify_one(),
            "silence" => sil.notify_one(),
            _ => return bad("action must be disconnect or silence"),
        }
    }
    Json(json!({"affected": targets.iter().map(|t| t.0).collect::<Vec<_>>()})).into_response()
}

/// `GET|POST|DELETE /_sim/faults`: POST adds the given counters (see [`Faults`]; an
/// unknown name is a 400), DELETE clears them all.
pub async fn faults_get(State(sim): State<Arc<Sim>>) -> Response {
    Json(json!({"faults": sim.lock().faults})).into_response()
}

pub async fn faults_clear(State(sim): State<Arc<Sim>>) -> Response {
    let mut st = sim.lock();
    st.faults = Faults::default();
    Json(json!({"faults": st.faults})).into_response()
}

pub async fn faults_set(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let f: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad(&format!("faults: {e}")),
    };
    let mut st = sim.lock();
    st.faults.merge(&f);
    Json(json!({"faults": st.faults})).into_response()
}

/// `GET /_sim/cards`.
pub async fn cards(State(sim): State<Arc<Sim>>) -> Response {
    Json(json!({"cards": sim.lock().cards})).into_response()
}

/// `GET /_sim/tokens`.
pub async fn tokens(State(sim): State<Arc<Sim>>) -> Response {
    let st = sim.lock();
    Json(json!({"issued": st.tokens_issued, "active": st.tokens.len(), "requests": st.requests}))
        .into_response()
}

/// `POST /_sim/sessions/expire`: expire every session webhook now.
pub async fn expire_sessions(State(sim): State<Arc<Sim>>) -> Response {
    let mut st = sim.lock();
    for s in st.sessions.values_mut() {
        s.expires_ms = 0;
    }
    Json(json!({"expired": st.sessions.len()})).into_response()
}

/// `POST /_sim/robots` `{access_token, secret?}`: register a custom-robot webhook.
pub async fn add_robot(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let v = match body_or_empty(&body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(tok) = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return bad("access_token is required");
    };
    let secret = v.get("secret").and_then(Value::as_str).map(str::to_string);
    sim.lock().robots.insert(tok.to_string(), secret);
    Json(json!({"ok": true})).into_response()
}

/// `GET /_sim/health`.
pub async fn health(State(sim): State<Arc<Sim>>) -> Response {
    Json(json!({"ok": true, "base_url": sim.base_url, "client_id": sim.opts.client_id}))
        .into_response()
}
