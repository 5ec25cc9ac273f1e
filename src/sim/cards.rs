//! The AI card endpoints the bot calls (docs/dingtalk-protocol.md §7.1–7.2): create-and-deliver,
//! instance updates and streaming. Card states are kept per `outTrackId` for tests: params,
//! flowStatus history, streamed content, finalize/error flags, deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::openapi::{authorize, check_robot_code};
use super::reply::{api_body, api_error, ok_json, req_str, required};
use super::state::Sim;
use crate::clock::now_ms;
use crate::random_hex::random_hex;

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
    if space_id.is_empty() {
        return Err(api_error(
            400,
            "invalidParameter.openSpaceId.invalid",
            "openSpaceId names no conversation",
        ));
    }
    check_deliver_model(sim, kind, v.get(model))?;
    let mut st = sim.lock();
    let card = card_mut(&mut st.cards, id)?;
    if let Some(d) = card["deliveries"].as_array_mut() {
        d.push(json!({"spaceType": kind, "spaceId": space_id, "model": v[model]}));
    }
    Ok(
        json!({"spaceType": kind, "spaceId": space_id, "success": true, "carrierId": random_hex(8), "errorMsg": null}),
    )
}

/// Checks the deliver model an `openSpaceId` kind requires (docs/dingtalk-protocol.md §7.1). Group
/// (`IM_GROUP`): `imGroupOpenDeliverModel` is an object carrying this app's `robotCode`.
/// 1:1 (`IM_ROBOT`): `imRobotOpenDeliverModel` is an object; its `spaceType`, if given,
/// is `IM_ROBOT`, and its `robotCode`, if given, is this app's.
fn check_deliver_model(sim: &Sim, kind: &str, model: Option<&Value>) -> Result<(), Response> {
    let Some(model) = model else {
        return Err(api_error(
            400,
            "invalidParameter.deliverModel.empty",
            "missing deliver model for the space",
        ));
    };
    if !model.is_object() {
        return Err(api_error(
            400,
            "invalidParameter.deliverModel.invalid",
            "the deliver model must be an object",
        ));
    }
    if kind == "IM_GROUP" || model.get("robotCode").is_some() {
        check_robot_code(sim, model)?;
    }
    let space_type = model.get("spaceType");
    if kind == "IM_ROBOT" && space_type.is_some_and(|t| *t != "IM_ROBOT") {
        return Err(api_error(
            400,
            "invalidParameter.spaceType.invalid",
            "imRobotOpenDeliverModel.spaceType must be IM_ROBOT",
        ));
    }
    Ok(())
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

/// Whether an instance update merges `cardParamMap` key by key. DingTalk's
/// `cardUpdateOptions.updateCardDataByKey` (docs/dingtalk-protocol.md §7.1): true merges, false
/// replaces the whole map. The doc gives no default; an absent (or non-boolean) option is taken as
/// false, the strict reading: a client that relies on merging must ask for it.
fn merges_by_key(v: &Value) -> bool {
    v.pointer("/cardUpdateOptions/updateCardDataByKey")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `PUT /v1.0/card/instances`: updates `cardParamMap` (merged or replaced, see
/// [`merges_by_key`]) and records any `flowStatus` in the card's flow history.
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
    if merges_by_key(&v) {
        if let Some(cur) = card["params"].as_object_mut() {
            cur.extend(params);
        }
    } else {
        card["params"] = Value::Object(params);
    }
    Ok(ok_json(json!({"success": true, "result": true})))
}

/// One streaming update (docs/dingtalk-protocol.md §7.2) applied to a card's state: `content`
/// replaces (`isFull`) or is appended to the value of `key`; `isFinalize` / `isError` stick.
fn apply_stream(card: &mut Value, key: &str, content: &str, v: &Value) {
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
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
}

/// `PUT /v1.0/card/streaming`. `guid` is an idempotency id: a `guid` already applied to
/// this `outTrackId` is answered with success and changes nothing.
pub async fn streaming(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Reply {
    let v = prepare(&sim, &headers, "/v1.0/card/streaming", &body)?;
    let (Some(id), Some(key), Some(guid)) = (
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
    let mut guard = sim.lock();
    let st = &mut *guard;
    let card = card_mut(&mut st.cards, id)?;
    if st.stream_guids.insert((id.to_string(), guid.to_string())) {
        apply_stream(card, key, content, &v);
    }
    Ok(ok_json(json!({"success": true, "result": true})))
}
