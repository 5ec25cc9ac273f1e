//! AI card endpoints (spec §7.1–7.2) and the older interactive card (§7.5). Card states
//! are kept per `outTrackId` for tests: params, flowStatus history, streamed content,
//! finalize/error flags, deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::openapi::authorize;
use super::reply::{api_body, api_error, ok_json, req_str, required};
use super::state::{hex_id, now_ms, Sim};

/// Reads and authorizes a card call's body.
fn prepare(sim: &Sim, headers: &HeaderMap, api: &str, body: &[u8]) -> Result<Value, Response> {
    authorize(sim, headers, api)?;
    api_body(body)
}

/// `cardParamMap` must be a map of strings.
fn param_map(v: &Value) -> Result<Map<String, Value>, Response> {
    let m = v
        .pointer("/cardData/cardParamMap")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if m.values().any(|x| !x.is_string()) {
        return Err(api_error(
            400,
            "invalidParameter.cardParamMap",
            "cardParamMap values must be strings",
        ));
    }
    Ok(m)
}

fn create(sim: &Sim, v: &Value) -> Result<String, Response> {
    let template = required(v, "cardTemplateId")?;
    let id = required(v, "outTrackId")?;
    let params = param_map(v)?;
    let flow = params.get("flowStatus").cloned().unwrap_or(Value::Null);
    let card = json!({"outTrackId": id, "cardTemplateId": template, "params": params,
        "flow_history": [flow], "streaming": {}, "stream_updates": 0, "finalized": false, "error": false,
        "deliveries": [], "created_at_ms": now_ms()});
    sim.lock().cards.insert(id.to_string(), card);
    Ok(id.to_string())
}

fn deliver(sim: &Sim, v: &Value, id: &str) -> Result<Value, Response> {
    let space = required(v, "openSpaceId")?;
    let rest = space.strip_prefix("dtv1.card//").unwrap_or("");
    let (kind, space_id) = rest.split_once('.').unwrap_or(("", ""));
    let model = match kind {
        "IM_GROUP" => "imGroupOpenDeliverModel",
        "IM_ROBOT" => "imRobotOpenDeliverModel",
        _ => {
            return Err(api_error(
                400,
                "invalidParameter.openSpaceId.invalid",
                "openSpaceId is not dtv1.card//IM_GROUP.x or IM_ROBOT.x",
            ))
        }
    };
    if space_id.is_empty() || v.get(model).is_none() {
        return Err(api_error(
            400,
            "invalidParameter.deliverModel.empty",
            "missing deliver model for the space",
        ));
    }
    let mut st = sim.lock();
    let card = card_mut(&mut st.cards, id)?;
    if let Some(d) = card["deliveries"].as_array_mut() {
        d.push(json!({"spaceType": kind, "spaceId": space_id, "model": v[model]}));
    }
    Ok(
        json!({"spaceType": kind, "spaceId": space_id, "success": true, "carrierId": hex_id(8), "errorMsg": null}),
    )
}

/// A handler's answer: the success body, or a ready DingTalk error response (axum
/// renders both).
type Reply = Result<Response, Response>;

/// The card `outTrackId` names, or `invalidParameter.outTrackId.notExist`.
fn card_mut<'a>(
    cards: &'a mut BTreeMap<String, Value>,
    id: &str,
) -> Result<&'a mut Value, Response> {
    cards.get_mut(id).ok_or_else(|| {
        api_error(
            400,
            "invalidParameter.outTrackId.notExist",
            "card instance not found",
        )
    })
}

/// `POST /v1.0/card/instances`.
pub async fn create_instance(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/card/instances", &body)?;
    create(&sim, &v)?;
    Ok(ok_json(json!({"success": true, "result": hex_id(8)})))
}

/// `POST /v1.0/card/instances/deliver`.
pub async fn deliver_instance(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/card/instances/deliver", &body)?;
    let r = deliver(&sim, &v, required(&v, "outTrackId")?)?;
    Ok(ok_json(json!({"success": true, "result": [r]})))
}

/// `POST /v1.0/card/instances/createAndDeliver`. A failed delivery removes the card again.
pub async fn create_and_deliver(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let v = prepare(
        &sim,
        &headers,
        "/v1.0/card/instances/createAndDeliver",
        &body,
    )?;
    let id = create(&sim, &v)?;
    let r = deliver(&sim, &v, &id).inspect_err(|_| {
        sim.lock().cards.remove(&id);
    })?;
    Ok(ok_json(
        json!({"success": true, "result": {"outTrackId": id, "deliverResults": [r]}}),
    ))
}

/// `PUT /v1.0/card/instances` (update data by key).
pub async fn update_instance(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/card/instances#put", &body)?;
    let id = required(&v, "outTrackId")?;
    let params = param_map(&v)?;
    let mut st = sim.lock();
    let card = card_mut(&mut st.cards, id)?;
    if let Some(flow) = params.get("flowStatus") {
        if let Some(h) = card["flow_history"].as_array_mut() {
            h.push(flow.clone());
        }
    }
    if let Some(cur) = card["params"].as_object_mut() {
        cur.extend(params);
    }
    Ok(ok_json(json!({"success": true, "result": true})))
}

/// `PUT /v1.0/card/streaming`.
pub async fn streaming(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/card/streaming", &body)?;
    let (Some(id), Some(key), Some(_guid)) = (
        req_str(&v, "outTrackId"),
        req_str(&v, "key"),
        req_str(&v, "guid"),
    ) else {
        return Err(api_error(
            400,
            "invalidParameter.param.invalid",
            "outTrackId, key and guid are required",
        ));
    };
    let Some(content) = v.get("content").and_then(Value::as_str) else {
        return Err(api_error(
            400,
            "invalidParameter.param.invalid",
            "content is required",
        ));
    };
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut st = sim.lock();
    let card = card_mut(&mut st.cards, id)?;
    let prev = card["streaming"][key].as_str().unwrap_or("").to_string();
    let next = if flag("isFull") {
        content.to_string()
    } else {
        prev + content
    };
    card["streaming"][key] = json!(next);
    card["stream_updates"] = json!(card["stream_updates"].as_u64().unwrap_or(0) + 1);
    if flag("isFinalize") {
        card["finalized"] = json!(true);
    }
    if flag("isError") {
        card["error"] = json!(true);
    }
    Ok(ok_json(json!({"success": true, "result": true})))
}

/// `POST /v1.0/im/v1.0/robot/interactiveCards/send` and `PUT /v1.0/im/robots/interactiveCards`.
pub async fn interactive(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/im/robots/interactiveCards", &body)?;
    let id = required(&v, "cardBizId")?;
    if !v.get("cardData").is_some_and(Value::is_string) {
        return Err(api_error(
            400,
            "invalidParameter.cardData.invalid",
            "cardData must be a JSON string",
        ));
    }
    let key = format!("interactive:{id}");
    let mut st = sim.lock();
    let entry = st
        .cards
        .entry(key)
        .or_insert_with(|| json!({"cardBizId": id, "updates": 0}));
    entry["cardData"] = v["cardData"].clone();
    entry["updates"] = json!(entry["updates"].as_u64().unwrap_or(0) + 1);
    Ok(ok_json(json!({"processQueryKey": hex_id(12)})))
}
