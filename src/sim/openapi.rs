//! The OpenAPI side (docs/dingtalk-protocol.md §4, §7): access tokens, robot group / 1:1 sends and
//! AI card endpoints the bot calls, with DingTalk's validation, error shapes, a real per-API QPS
//! limit, and injected faults. Every accepted send lands in the outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{api_body, api_error, ok_json, req_str, required};
use super::state::{take, Sim};
use crate::clock::{now_ms, now_us};
use crate::random_hex::random_hex;

/// `POST /v1.0/oauth2/accessToken`.
pub async fn access_token(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let v = match api_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if req_str(&v, "appKey") != Some(sim.opts.client_id.as_str())
        || req_str(&v, "appSecret") != Some(sim.opts.client_secret.as_str())
    {
        return api_error(
            400,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let tok = issue_token(&sim);
    ok_json(json!({"accessToken": tok, "expireIn": sim.opts.token_ttl_secs}))
}

/// The current valid token (extended), or a new one.
fn issue_token(sim: &Sim) -> String {
    let now = now_ms();
    let exp = now + sim.opts.token_ttl_secs * 1000;
    let mut st = sim.lock();
    if let Some((t, e)) = st.tokens.iter_mut().find(|(_, e)| **e > now) {
        *e = exp;
        return t.clone();
    }
    let tok = random_hex(16);
    st.tokens.insert(tok.clone(), exp);
    st.tokens_issued += 1;
    tok
}

/// Checks the `x-acs-dingtalk-access-token` header, the QPS window of `api` and the
/// injected 504/auth/QPS faults (in that order: a gateway timeout hides everything behind
/// it). Records the request, even a refused one.
pub fn authorize(sim: &Sim, headers: &HeaderMap, api: &str) -> Result<(), Response> {
    let tok = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut st = sim.lock();
    st.requests
        .push_back(json!({"api": api, "at_ms": now_ms()}));
    if st.requests.len() > 1000 {
        st.requests.pop_front();
    }
    if tok.is_empty() {
        return Err(api_error(
            400,
            "AuthenticationFailed.MissingParameter",
            "缺少参数 x-acs-dingtalk-access-token",
        ));
    }
    if take(&mut st.faults.gateway_504) {
        return Err(api_error(
            504,
            "GatewayTimeout",
            "the service did not answer within 3 s",
        ));
    }
    if take(&mut st.faults.invalid_auth) {
        st.tokens.clear();
        return Err(api_error(
            400,
            "InvalidAuthentication",
            "不合法的access_token",
        ));
    }
    if st.tokens.get(tok).is_none_or(|e| *e <= now_ms()) {
        return Err(api_error(
            400,
            "InvalidAuthentication",
            "不合法的access_token",
        ));
    }
    if take(&mut st.faults.qps_403) {
        return Err(api_error(
            403,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "调用频率超过限制",
        ));
    }
    let limit = sim.opts.qps_limit;
    let q = st.qps.entry(api.to_string()).or_default();
    let now = Instant::now();
    while q
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        q.pop_front();
    }
    if q.len() >= limit {
        return Err(api_error(
            403,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "调用频率超过限制",
        ));
    }
    q.push_back(now);
    Ok(())
}

/// Every `msgKey` the robot send APIs accept (docs/dingtalk-protocol.md §4.3).
const MSG_KEYS: [&str; 13] = [
    "sampleText",
    "sampleMarkdown",
    "sampleImageMsg",
    "sampleLink",
    "sampleActionCard",
    "sampleActionCard2",
    "sampleActionCard3",
    "sampleActionCard4",
    "sampleActionCard5",
    "sampleActionCard6",
    "sampleAudio",
    "sampleFile",
    "sampleVideo",
];

/// `robotCode` of `v` must be present (`invalidParameter.robotCode.empty`) and this app's
/// (`invalidParameter.robotCode.auth`). Shared by robot sends, card delivery and
/// interactive cards.
pub fn check_robot_code(sim: &Sim, v: &Value) -> Result<(), Response> {
    if required(v, "robotCode")? != sim.opts.robot_code {
        return Err(api_error(
            400,
            "invalidParameter.robotCode.auth",
            "robotCode does not belong to this app",
        ));
    }
    Ok(())
}

/// Validates robotCode + msgKey + msgParam; returns the parsed msgParam.
fn check_message(sim: &Sim, v: &Value) -> Result<Value, Response> {
    check_robot_code(sim, v)?;
    let key = required(v, "msgKey")?;
    if !MSG_KEYS.contains(&key) {
        return Err(api_error(
            400,
            "invalidParameter.msgKey.invalid",
            "msgKey is not supported",
        ));
    }
    let param = v.get("msgParam").and_then(Value::as_str).ok_or_else(|| {
        api_error(
            400,
            "invalidParameter.msgParam.invalid",
            "msgParam must be a JSON string",
        )
    })?;
    if param.len() > 15_000 {
        return Err(api_error(
            400,
            "invalidParameter.msgParam.invalid",
            "msgParam exceeds 15000 bytes",
        ));
    }
    match serde_json::from_str::<Value>(param) {
        Ok(p @ Value::Object(_)) => Ok(p),
        _ => Err(api_error(
            400,
            "invalidParameter.msgParam.invalid",
            "msgParam is not a JSON object",
        )),
    }
}

fn param_text(key: &str, p: &Value) -> String {
    let k = if key == "sampleText" {
        "content"
    } else {
        "text"
    };
    p.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Appends to the outbox; returns the entry's seq. `at_us` is when the request arrived,
/// stamped by its handler before it took the simulator's lock (contended by the
/// simulator's own work, which is not the bot's time).
pub fn record_out(sim: &Sim, mut entry: Value, at_us: u64) -> u64 {
    let mut st = sim.lock();
    let seq = st.outbox.len() as u64 + 1;
    entry["seq"] = json!(seq);
    entry["at_ms"] = json!(at_us / 1000);
    entry["at_us"] = json!(at_us);
    st.outbox.push(entry);
    seq
}

/// The checks every robot send shares: token, JSON body, `msgKey`/`msgParam`.
/// Returns the body and the parsed `msgParam`.
fn authorized_message(
    sim: &Sim,
    headers: &HeaderMap,
    api: &str,
    body: &[u8],
) -> Result<(Value, Value), Response> {
    authorize(sim, headers, api)?;
    let v = api_body(body)?;
    let param = check_message(sim, &v)?;
    Ok((v, param))
}

/// `POST /v1.0/robot/groupMessages/send`.
pub async fn group_send(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived_us = now_us();
    let (v, param) =
        match authorized_message(&sim, &headers, "/v1.0/robot/groupMessages/send", &body) {
            Ok(m) => m,
            Err(r) => return r,
        };
    let cid = match required(&v, "openConversationId") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let key = req_str(&v, "msgKey").unwrap_or_default();
    let pqk = random_hex(12);
    record_out(
        &sim,
        json!({"route": "group_send", "conversation_id": cid, "msg_key": key,
        "text": param_text(key, &param), "process_query_key": pqk, "body": v}),
        arrived_us,
    );
    ok_json(json!({"processQueryKey": pqk}))
}

/// `POST /v1.0/robot/oToMessages/batchSend`.
pub async fn batch_send(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived_us = now_us();
    let (v, param) =
        match authorized_message(&sim, &headers, "/v1.0/robot/oToMessages/batchSend", &body) {
            Ok(m) => m,
            Err(r) => return r,
        };
    let users: Vec<String> = v
        .get("userIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if users.is_empty() {
        return api_error(400, "invalidParameter.userIds.empty", "userIds is empty");
    }
    if users.len() > 20 {
        return api_error(
            400,
            "invalidParameter.userIds.overMax",
            "userIds exceeds 20",
        );
    }
    let (flow, invalid) = batch_refusals(&sim, &users);
    let key = req_str(&v, "msgKey").unwrap_or_default();
    let pqk = random_hex(12);
    if flow.is_empty() && invalid.is_empty() {
        record_out(
            &sim,
            json!({"route": "batch_send", "user_ids": users, "msg_key": key,
            "text": param_text(key, &param), "process_query_key": pqk, "body": v}),
            arrived_us,
        );
    }
    ok_json(
        json!({"processQueryKey": pqk, "invalidStaffIdList": invalid, "flowControlledStaffIdList": flow,
        "filteredStaffIdList": []}),
    )
}

/// The users a batchSend refuses under the injected faults, as (flow-controlled, invalid).
/// At most one fault is consumed per call (`invalid_staff` first); with either, every
/// user is refused and nothing is delivered.
fn batch_refusals(sim: &Sim, users: &[String]) -> (Vec<String>, Vec<String>) {
    let mut st = sim.lock();
    if take(&mut st.faults.invalid_staff) {
        (Vec::new(), users.to_vec())
    } else if take(&mut st.faults.flow_control) {
        (users.to_vec(), Vec::new())
    } else {
        (Vec::new(), Vec::new())
    }
}
