//! Robot webhooks: session webhooks (`/robot/sendBySession?session=`, docs/dingtalk-protocol.md §3)
//! created per injected message and expiring, and custom-robot webhooks
//! (`/robot/send?access_token=`, docs/dingtalk-protocol.md §5) with sign checks. Both answer HTTP
//! 200 with `errcode`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::openapi::record_out;
use super::reply::{errcode, errcode_body};
use super::sign::{signature_matches, SIGN_WINDOW_MS};
use super::state::{take, Sim};
use crate::clock::{now_ms, now_us};

/// Validates a text/markdown webhook body; returns (msgtype, text).
fn check_body(bytes: &[u8]) -> Result<(Value, String, String), Response> {
    if bytes.len() > 20_000 {
        return Err(errcode(460101, "message too long, exceed 20000 bytes"));
    }
    let v = errcode_body(bytes)?;
    let msgtype = v
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let text = match msgtype.as_str() {
        "text" => v.pointer("/text/content").and_then(Value::as_str),
        "markdown" => v
            .pointer("/markdown/text")
            .and_then(Value::as_str)
            .filter(|_| v.pointer("/markdown/title").is_some()),
        "link" | "actionCard" | "feedCard" => Some(""),
        "" => return Err(errcode(40035, "缺少参数 msgtype")),
        _ => return Err(errcode(400105, "不支持的消息类型")),
    };
    let Some(text) = text else {
        return Err(errcode(40035, "缺少参数 content"));
    };
    let text = text.to_string();
    Ok((v, msgtype, text))
}

/// `POST /robot/sendBySession?session=`. Injected faults (`session_300001`, then
/// `webhook_busy`) answer before the session is looked up and deliver nothing.
pub async fn send_by_session(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let arrived_us = now_us();
    let session = q.get("session").cloned().unwrap_or_default();
    let conversation = {
        let mut st = sim.lock();
        if take(&mut st.faults.session_300001) {
            return errcode(300001, "session 不存在");
        }
        if take(&mut st.faults.webhook_busy) {
            return errcode(-1, "系统繁忙");
        }
        match st.sessions.get(&session) {
            Some(s) if s.expires_ms > now_ms() => s.conversation_id.clone(),
            _ => return errcode(300001, "session 不存在"),
        }
    };
    let (v, msgtype, text) = match check_body(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let at = v.pointer("/at/atUserIds").cloned().unwrap_or(json!([]));
    record_out(
        &sim,
        json!({"route": "session_webhook", "conversation_id": conversation, "session": session,
        "msgtype": msgtype, "text": text, "at_user_ids": at, "body": v}),
        arrived_us,
    );
    errcode(0, "ok")
}

/// `POST /robot/send?access_token=[&timestamp=&sign=]`.
pub async fn robot_send(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let arrived_us = now_us();
    let token = q.get("access_token").cloned().unwrap_or_default();
    let secret = {
        let mut st = sim.lock();
        let Some(secret) = st.robots.get(&token).cloned() else {
            return errcode(300005, "token is not exist");
        };
        if take(&mut st.faults.robot_130101) {
            return errcode(130101, "send too fast, exceed 20 times per minute");
        }
        secret
    };
    if let Some(secret) = secret {
        // axum's Query already percent-decoded `sign`.
        let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
            return errcode(310000, "sign not match");
        };
        let Ok(ts_ms) = ts.parse::<u64>() else {
            return errcode(310000, "invalid timestamp");
        };
        if ts_ms.abs_diff(now_ms()) > SIGN_WINDOW_MS {
            return errcode(310000, "invalid timestamp");
        }
        if !signature_matches(ts, &secret, sign) {
            return errcode(310000, "sign not match");
        }
    }
    let (v, msgtype, text) = match check_body(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    record_out(
        &sim,
        json!({"route": "robot_webhook", "access_token": token, "msgtype": msgtype, "text": text, "body": v}),
        arrived_us,
    );
    errcode(0, "ok")
}
