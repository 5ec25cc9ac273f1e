//! Response helpers in DingTalk's two error dialects: the new API's
//! `{code,message,requestid}` with a non-2xx status (docs/dingtalk-protocol.md §4.4), and the old
//! API's / webhooks' `{errcode,errmsg}` with HTTP 200 (docs/dingtalk-protocol.md §3, §5). Plus body
//! parsing that never panics.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::random_hex::random_hex;

/// A new-API error answer.
pub fn api_error(status: u16, code: &str, message: &str) -> Response {
    let rid = format!("{}-{}", random_hex(4), random_hex(6));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (
        status,
        Json(json!({"code": code, "message": message, "requestid": rid})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        r.headers_mut().insert("x-acs-request-id", v.clone());
        r.headers_mut().insert("x-acs-trace-id", v);
    }
    r
}

/// An old-API / webhook answer (always HTTP 200).
pub fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

/// Media type of the new API's JSON success answers, as DingTalk spells it
/// (docs/dingtalk-protocol.md §1.1).
pub const JSON_UTF8: &str = "application/json;charset=utf-8";

/// A new-API success answer: HTTP 200, `Content-Type: application/json;charset=utf-8`.
pub fn ok_json(v: Value) -> Response {
    ([(header::CONTENT_TYPE, JSON_UTF8)], v.to_string()).into_response()
}

/// Parses a new-API JSON object body, or the error DingTalk gives for it.
pub fn api_body(bytes: &[u8]) -> Result<Value, Response> {
    if bytes.is_empty() {
        return Err(api_error(400, "MissingParameter", "body is mandatory"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(api_error(
            400,
            "InvalidParameter",
            "body is not a JSON object",
        )),
    }
}

/// Parses an old-API / webhook JSON body, or errcode 40035 / 43004.
pub fn errcode_body(bytes: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ if bytes.is_empty() => Err(errcode(40035, "缺少参数 body")),
        _ => Err(errcode(
            43004,
            "无效的HTTP HEADER Content-Type / body is not JSON",
        )),
    }
}

/// A required non-empty string field.
pub fn req_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A required non-empty string field, or the OpenAPI's 400 `invalidParameter.KEY.empty`.
pub fn required<'a>(v: &'a Value, key: &str) -> Result<&'a str, Response> {
    req_str(v, key).ok_or_else(|| {
        api_error(
            400,
            &format!("invalidParameter.{key}.empty"),
            &format!("{key} is empty"),
        )
    })
}
