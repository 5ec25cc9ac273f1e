//! The simulator rejects what DingTalk rejects, the way DingTalk does: the OpenAPI with
//! HTTP 400 and a `{code, message, requestid}` body naming the field, the old `oapi` and
//! webhook endpoints with `{errcode, errmsg}`; and nothing rejected leaves state behind. A
//! client that passes against the simulator must not be relying on it being lenient.

use crate::support;

use clawdbot_testkit::fake_model::FakeConfig;
use serde_json::{json, Value};
use support::stack::{Stack, CLIENT_ID, CLIENT_SECRET};

/// One OpenAPI call with the simulator's access token; returns (HTTP status, body).
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn new(base: &str) -> Api {
        let http = reqwest::Client::new();
        let tok: Value = http
            .post(format!("{base}/v1.0/oauth2/accessToken"))
            .json(&json!({"appKey": CLIENT_ID, "appSecret": CLIENT_SECRET}))
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token body");
        Api {
            base: base.to_string(),
            token: tok["accessToken"].as_str().expect("accessToken").into(),
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-acs-dingtalk-access-token", &self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, body).await
    }
}

/// Asserts a 400 with DingTalk's error code and a request id.
fn assert_rejected(got: &(u16, Value), code: &str) {
    assert_eq!(got.0, 400, "{got:?}");
    assert_eq!(got.1["code"], code, "{got:?}");
    assert!(got.1["requestid"].as_str().is_some_and(|s| !s.is_empty()));
}

fn card(id: &str, space: &str) -> Value {
    json!({
        "cardTemplateId": "tpl.schema",
        "outTrackId": id,
        "cardData": {"cardParamMap": {"flowStatus": "1"}},
        "openSpaceId": space,
        "imGroupOpenDeliverModel": {"robotCode": CLIENT_ID},
    })
}

#[test]
fn card_calls_name_the_missing_or_unknown_field() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let mut no_id = card("x", "dtv1.card//IM_GROUP.cidA==");
        no_id.as_object_mut().unwrap().remove("outTrackId");
        assert_rejected(
            &api.post("/v1.0/card/instances/createAndDeliver", no_id).await,
            "invalidParameter.outTrackId.empty",
        );
        let mut no_tpl = card("x", "dtv1.card//IM_GROUP.cidA==");
        no_tpl["cardTemplateId"] = json!("");
        assert_rejected(
            &api.post("/v1.0/card/instances/createAndDeliver", no_tpl).await,
            "invalidParameter.cardTemplateId.empty",
        );
        let mut not_strings = card("x", "dtv1.card//IM_GROUP.cidA==");
        not_strings["cardData"]["cardParamMap"]["n"] = json!(1);
        assert_rejected(
            &api.post("/v1.0/card/instances/createAndDeliver", not_strings).await,
            "invalidParameter.cardParamMap",
        );
        assert_rejected(
            &api.put(
                "/v1.0/card/instances",
                json!({"outTrackId": "never-created", "cardData": {"cardParamMap": {}}}),
            )
            .await,
            "invalidParameter.outTrackId.notExist",
        );
        assert_rejected(
            &api.put(
                "/v1.0/card/streaming",
                json!({"outTrackId": "never-created", "key": "content", "guid": "g1", "content": "x"}),
            )
            .await,
            "invalidParameter.outTrackId.notExist",
        );
        assert_rejected(
            &api.put(
                "/v1.0/card/streaming",
                json!({"outTrackId": "x", "key": "content", "content": "x"}),
            )
            .await,
            "invalidParameter.param.invalid",
        );
    });
}

#[test]
fn a_failed_create_and_deliver_leaves_no_card_behind() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        assert_rejected(
            &api.post(
                "/v1.0/card/instances/createAndDeliver",
                card("bad-space", "dtv1.card//NOWHERE.x"),
            )
            .await,
            "invalidParameter.openSpaceId.invalid",
        );
        let (status, ok) = api
            .post(
                "/v1.0/card/instances/createAndDeliver",
                card("good", "dtv1.card//IM_GROUP.cidA=="),
            )
            .await;
        assert_eq!(status, 200, "{ok}");
        assert_eq!(ok["result"]["outTrackId"], "good");
        let cards = stack.sim.get("/_sim/cards").await.expect("cards");
        let text = cards.to_string();
        assert!(text.contains("\"good\""), "{text}");
        assert!(!text.contains("bad-space"), "{text}");
        // Streaming into the delivered card works and is recorded.
        let (status, body) = api
            .put(
                "/v1.0/card/streaming",
                json!({"outTrackId": "good", "key": "content", "guid": "g1",
                       "content": "hi", "isFull": true, "isFinalize": true}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    });
}

#[test]
fn robot_sends_check_robot_code_message_key_and_target() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let text = json!({"content": "hello"}).to_string();
        let good = json!({"robotCode": CLIENT_ID, "msgKey": "sampleText",
                          "msgParam": text, "openConversationId": "cidA=="});
        let mut no_robot = good.clone();
        no_robot["robotCode"] = json!("");
        assert_rejected(
            &api.post("/v1.0/robot/groupMessages/send", no_robot).await,
            "invalidParameter.robotCode.empty",
        );
        let mut other_robot = good.clone();
        other_robot["robotCode"] = json!("dingSomeoneElse");
        assert_rejected(
            &api.post("/v1.0/robot/groupMessages/send", other_robot)
                .await,
            "invalidParameter.robotCode.auth",
        );
        let mut no_key = good.clone();
        no_key.as_object_mut().unwrap().remove("msgKey");
        assert_rejected(
            &api.post("/v1.0/robot/groupMessages/send", no_key).await,
            "invalidParameter.msgKey.empty",
        );
        let mut no_target = good.clone();
        no_target
            .as_object_mut()
            .unwrap()
            .remove("openConversationId");
        assert_rejected(
            &api.post("/v1.0/robot/groupMessages/send", no_target).await,
            "invalidParameter.openConversationId.empty",
        );
        let outbox = || async { stack.sim.outbox().await.expect("outbox") };
        assert!(
            outbox().await.is_empty(),
            "rejected sends must not reach the outbox"
        );
        let (status, body) = api.post("/v1.0/robot/groupMessages/send", good).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["processQueryKey"].as_str().is_some(), "{body}");
        assert_eq!(outbox().await.len(), 1);
    });
}

/// GET or POST on the simulator without the OpenAPI token; returns the JSON body.
async fn plain(stack: &Stack, path: &str, body: Option<Value>) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", stack.sim_url);
    let req = match body {
        Some(b) => http.post(url).json(&b),
        None => http.get(url),
    };
    req.send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON body")
}

#[test]
fn custom_robot_webhooks_enforce_the_signature() {
    use clawdbot::dingtalk::sign::webhook_sign_query;
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let added = plain(
            &stack,
            "/_sim/robots",
            Some(json!({"access_token": "tokA", "secret": "SECrobot"})),
        )
        .await;
        assert_eq!(added["ok"], true, "{added}");
        let msg = json!({"msgtype": "text", "text": {"content": "deploy done"}});
        let send = |query: String| {
            let (stack, msg) = (&stack, msg.clone());
            async move {
                plain(
                    stack,
                    &format!("/robot/send?access_token={query}"),
                    Some(msg),
                )
                .await
            }
        };
        let now = clawdbot::clock::now_ms();
        assert_eq!(send("nobody".into()).await["errcode"], 300005);
        assert_eq!(send("tokA".into()).await["errcode"], 310000, "unsigned");
        let wrong = webhook_sign_query(now, "not-the-secret");
        assert_eq!(send(format!("tokA{wrong}")).await["errcode"], 310000);
        let stale = webhook_sign_query(now - 2 * 3_600_000, "SECrobot");
        assert_eq!(send(format!("tokA{stale}")).await["errcode"], 310000);
        assert!(stack.sim.outbox().await.expect("outbox").is_empty());

        let signed = webhook_sign_query(now, "SECrobot");
        let ok = send(format!("tokA{signed}")).await;
        assert_eq!(ok["errcode"], 0, "{ok}");
        let outbox = stack.sim.outbox().await.expect("outbox");
        assert_eq!(outbox.len(), 1, "{outbox:?}");
        assert_eq!(outbox[0]["route"], "robot_webhook");
        assert_eq!(outbox[0]["text"], "deploy done");

        stack
            .sim
            .faults(json!({"robot_130101": 1}))
            .await
            .expect("fault");
        assert_eq!(send(format!("tokA{signed}")).await["errcode"], 130101);
        assert_eq!(send(format!("tokA{signed}")).await["errcode"], 0);
    });
}

#[test]
fn robot_sends_accept_every_documented_msg_key() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let param = json!({"title": "t", "text": "x", "content": "x"}).to_string();
        let send = |key: &str| {
            let body = json!({"robotCode": CLIENT_ID, "msgKey": key, "msgParam": param,
                              "openConversationId": "cidA=="});
            api.post("/v1.0/robot/groupMessages/send", body)
        };
        let mut keys = vec![
            "sampleText",
            "sampleMarkdown",
            "sampleImageMsg",
            "sampleLink",
        ];
        keys.extend(["sampleActionCard", "sampleActionCard2", "sampleActionCard3"]);
        keys.extend([
            "sampleActionCard4",
            "sampleActionCard5",
            "sampleActionCard6",
        ]);
        keys.extend(["sampleAudio", "sampleFile", "sampleVideo"]);
        for key in keys {
            let (status, body) = send(key).await;
            assert_eq!(status, 200, "{key}: {body}");
        }
        assert_rejected(
            &send("sampleActionCard7").await,
            "invalidParameter.msgKey.invalid",
        );
    });
}

/// `connections/open` with `accept` as the Accept header (reqwest's own `*/*` when None);
/// returns (status, Content-Type, body text).
async fn open_connection(stack: &Stack, accept: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1.0/gateway/connections/open", stack.sim_url))
        .json(
            &json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
            "subscriptions": [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]}),
        );
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.expect("connections/open");
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, kind, r.text().await.expect("body"))
}

/// A fresh (endpoint, ticket) from a client that asks for JSON.
async fn fresh_ticket(stack: &Stack) -> (String, String) {
    let (status, _, body) = open_connection(stack, Some("application/json")).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON answer");
    let field = |k: &str| v[k].as_str().expect(k).to_string();
    (field("endpoint"), field("ticket"))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket handshake with `ticket`: the stream, or the HTTP status it was refused with.
async fn upgrade(endpoint: &str, ticket: &str) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("{endpoint}?ticket={ticket}")).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

#[test]
fn a_ticket_is_used_up_only_by_a_real_websocket_upgrade() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let (endpoint, ticket) = fresh_ticket(&stack).await;
        let http_url = format!("{}/connect?ticket={ticket}", stack.sim_url);
        let plain_get = reqwest::get(&http_url).await.expect("plain GET");
        assert_eq!(
            plain_get.status().as_u16(),
            400,
            "a plain GET is no upgrade"
        );
        let ws = upgrade(&endpoint, &ticket).await;
        assert!(ws.is_ok(), "the plain GET must not have used the ticket up");
        assert_eq!(
            upgrade(&endpoint, &ticket).await.err(),
            Some(403),
            "single use"
        );
        assert_eq!(upgrade(&endpoint, "made-up").await.err(), Some(403));
    });
}

/// A ticket used within its 5 s life works (a generous window for two loopback requests
/// on a loaded machine); one used after it is refused. Waiting past the TTL is a lower
/// bound, which a slow machine only makes longer.
#[test]
fn an_expired_ticket_is_refused() {
    const TTL_MS: u64 = 5_000;
    let stack = Stack::new(
        FakeConfig::default(),
        &["--ticket-ttl-ms", &TTL_MS.to_string()],
    );
    stack.rt.block_on(async {
        let (endpoint, prompt) = fresh_ticket(&stack).await;
        assert!(upgrade(&endpoint, &prompt).await.is_ok(), "used in time");
        let (endpoint, late) = fresh_ticket(&stack).await;
        tokio::time::sleep(std::time::Duration::from_millis(TTL_MS + 200)).await;
        assert_eq!(upgrade(&endpoint, &late).await.err(), Some(403));
    });
}

/// The text of the first `<tag>...</tag>` in `xml`.
fn xml_element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

#[test]
fn connections_open_answers_json_only_to_a_client_that_asks_for_it() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        for accept in [None, Some("*/*"), Some("text/html")] {
            let (status, kind, body) = open_connection(&stack, accept).await;
            assert_eq!(status, 200, "{accept:?}: {body}");
            assert!(kind.starts_with("application/xml"), "{accept:?}: {kind}");
            assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
            let endpoint = xml_element(&body, "endpoint").expect("endpoint");
            let ticket = xml_element(&body, "ticket").expect("ticket");
            assert!(upgrade(endpoint, ticket).await.is_ok(), "a real ticket");
        }
        for accept in ["application/json", "text/html, Application/JSON;q=0.9"] {
            let (status, kind, body) = open_connection(&stack, Some(accept)).await;
            assert_eq!(status, 200, "{accept}: {body}");
            assert_eq!(kind, "application/json;charset=utf-8", "{accept}");
            let v: Value = serde_json::from_str(&body).expect("JSON");
            assert!(v["ticket"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
        }
    });
}

/// The simulator's state of the card `id` (`/_sim/cards`).
async fn card_state(stack: &Stack, id: &str) -> Value {
    let cards = stack.sim.get("/_sim/cards").await.expect("cards");
    cards["cards"][id].clone()
}

#[test]
fn a_repeated_streaming_guid_is_answered_but_not_applied() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let (status, body) = api
            .post(
                "/v1.0/card/instances/createAndDeliver",
                card("c1", "dtv1.card//IM_GROUP.cidA=="),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let chunk = |guid: &str, text: &str| {
            api.put(
                "/v1.0/card/streaming",
                json!({"outTrackId": "c1", "key": "content", "guid": guid,
                       "content": text, "isFull": false}),
            )
        };
        for (guid, text) in [("g1", "ab"), ("g1", "ab"), ("g2", "c")] {
            let (status, body) = chunk(guid, text).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["success"], true, "{body}");
        }
        let state = card_state(&stack, "c1").await;
        assert_eq!(state["streaming"]["content"], "abc", "{state}");
        assert_eq!(state["stream_updates"], 2, "{state}");
    });
}

#[test]
fn card_delivery_checks_the_deliver_model_of_the_space() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let group = |id: &str, model: Value| {
            let mut c = card(id, "dtv1.card//IM_GROUP.cidA==");
            c["imGroupOpenDeliverModel"] = model;
            api.post("/v1.0/card/instances/createAndDeliver", c)
        };
        let direct = |id: &str, model: Value| {
            let mut c = card(id, "dtv1.card//IM_ROBOT.0423001");
            c.as_object_mut().unwrap().remove("imGroupOpenDeliverModel");
            c["imRobotOpenDeliverModel"] = model;
            api.post("/v1.0/card/instances/createAndDeliver", c)
        };
        assert_rejected(
            &group("g1", json!({"atUserIds": {}})).await,
            "invalidParameter.robotCode.empty",
        );
        assert_rejected(
            &group("g2", json!({"robotCode": "dingSomeoneElse"})).await,
            "invalidParameter.robotCode.auth",
        );
        assert_rejected(
            &direct("d1", json!("IM_ROBOT")).await,
            "invalidParameter.deliverModel.invalid",
        );
        assert_rejected(
            &direct("d2", json!({"spaceType": "IM_GROUP"})).await,
            "invalidParameter.spaceType.invalid",
        );
        assert_rejected(
            &direct("d3", json!({"robotCode": "dingSomeoneElse"})).await,
            "invalidParameter.robotCode.auth",
        );
        let cards = stack.sim.get("/_sim/cards").await.expect("cards");
        assert_eq!(cards["cards"], json!({}), "rejected cards must not stay");
        let (status, body) = direct("d4", json!({})).await;
        assert_eq!(status, 200, "spaceType is optional: {body}");
        let (status, body) = group("g3", json!({"robotCode": CLIENT_ID})).await;
        assert_eq!(status, 200, "{body}");
    });
}

#[test]
fn instance_updates_merge_by_key_only_when_asked() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let mut c = card("c1", "dtv1.card//IM_GROUP.cidA==");
        c["cardData"]["cardParamMap"] = json!({"flowStatus": "1", "content": ""});
        let (status, body) = api.post("/v1.0/card/instances/createAndDeliver", c).await;
        assert_eq!(status, 200, "{body}");
        let update = |params: Value, options: Option<Value>| {
            let mut b = json!({"outTrackId": "c1", "cardData": {"cardParamMap": params}});
            if let Some(o) = options {
                b["cardUpdateOptions"] = o;
            }
            api.put("/v1.0/card/instances", b)
        };
        let params = || async { card_state(&stack, "c1").await["params"].clone() };
        let by_key = json!({"updateCardDataByKey": true, "updatePrivateDataByKey": false});
        let (status, _) = update(json!({"flowStatus": "2"}), Some(by_key)).await;
        assert_eq!(status, 200);
        assert_eq!(params().await, json!({"flowStatus": "2", "content": ""}));
        let whole = json!({"updateCardDataByKey": false});
        let (status, _) = update(json!({"content": "x"}), Some(whole)).await;
        assert_eq!(status, 200);
        assert_eq!(params().await, json!({"content": "x"}), "false replaces");
        let (status, _) = update(json!({"flowStatus": "3"}), None).await;
        assert_eq!(status, 200);
        assert_eq!(
            params().await,
            json!({"flowStatus": "3"}),
            "absent replaces"
        );
        let flows = card_state(&stack, "c1").await["flow_history"].clone();
        assert_eq!(flows, json!(["1", "2", "3"]));
    });
}

#[test]
fn a_hung_http_callback_bot_does_not_hang_inject() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        // A "bot" that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/callback", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let inject = plain(
            &stack,
            "/_sim/messages",
            Some(json!({"text": "hi", "callback_url": url, "callback_timeout_ms": 300})),
        );
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), inject)
            .await
            .expect("inject must give up on a hung bot");
        assert_eq!(answer["callback_status"], 0, "{answer}");
        let error = answer["callback_error"].as_str().unwrap_or("");
        assert!(error.contains("timeout"), "{answer}");
        assert!(answer["msgId"].as_str().is_some(), "{answer}");
    });
}

#[test]
fn fault_knobs_are_counted_and_unknown_ones_refused() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let refused = stack.sim.faults(json!({"gateway_540": 1})).await;
        assert!(refused.is_err(), "a misspelt fault must not be accepted");
        let set = stack
            .sim
            .faults(json!({"gateway_504": 2, "webhook_busy": 1, "invalid_staff": 1}))
            .await
            .expect("faults");
        assert_eq!(set["faults"]["gateway_504"], 2, "{set}");
        // Red-team F8d: DELETE clears every fault at once.
        let cleared: Value = reqwest::Client::new()
            .delete(format!("{}/_sim/faults", stack.sim_url))
            .send()
            .await
            .expect("delete faults")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(cleared["faults"]["gateway_504"], 0, "{cleared}");
        let now: Value = reqwest::get(format!("{}/_sim/faults", stack.sim_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for name in ["gateway_504", "webhook_busy", "invalid_staff"] {
            assert_eq!(now["faults"][name], 0, "{name}: {now}");
        }
    });
}

#[test]
fn gateway_504_fails_the_next_token_using_calls() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let text = json!({"content": "hello"}).to_string();
        let body = json!({"robotCode": CLIENT_ID, "msgKey": "sampleText",
                          "msgParam": text, "openConversationId": "cidA=="});
        stack
            .sim
            .faults(json!({"gateway_504": 2}))
            .await
            .expect("fault");
        for _ in 0..2 {
            let (status, err) = api
                .post("/v1.0/robot/groupMessages/send", body.clone())
                .await;
            assert_eq!(status, 504, "{err}");
            assert!(err["requestid"].as_str().is_some(), "{err}");
        }
        let (status, ok) = api.post("/v1.0/robot/groupMessages/send", body).await;
        assert_eq!(status, 200, "{ok}");
        assert_eq!(stack.sim.outbox().await.expect("outbox").len(), 1);
    });
}

#[test]
fn webhook_busy_answers_errcode_minus_one_then_recovers() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let injected = stack.sim.inject_text("hi", false).await.expect("inject");
        let hook = injected["sessionWebhook"].as_str().expect("webhook");
        let path = hook.strip_prefix(stack.sim_url.as_str()).expect("sim URL");
        stack
            .sim
            .faults(json!({"webhook_busy": 1}))
            .await
            .expect("fault");
        let reply = json!({"msgtype": "text", "text": {"content": "hello"}});
        let busy = plain(&stack, path, Some(reply.clone())).await;
        assert_eq!(busy, json!({"errcode": -1, "errmsg": "系统繁忙"}));
        assert!(stack.sim.outbox().await.expect("outbox").is_empty());
        assert_eq!(plain(&stack, path, Some(reply)).await["errcode"], 0);
        assert_eq!(stack.sim.outbox().await.expect("outbox").len(), 1);
    });
}

#[test]
fn invalid_staff_refuses_every_user_of_the_next_batch_sends() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let text = json!({"content": "hello"}).to_string();
        let body = json!({"robotCode": CLIENT_ID, "msgKey": "sampleText",
                          "msgParam": text, "userIds": ["u1", "u2"]});
        stack
            .sim
            .faults(json!({"invalid_staff": 1}))
            .await
            .expect("fault");
        let (status, refused) = api
            .post("/v1.0/robot/oToMessages/batchSend", body.clone())
            .await;
        assert_eq!(status, 200, "{refused}");
        assert_eq!(
            refused["invalidStaffIdList"],
            json!(["u1", "u2"]),
            "{refused}"
        );
        assert_eq!(refused["flowControlledStaffIdList"], json!([]), "{refused}");
        assert!(stack.sim.outbox().await.expect("outbox").is_empty());
        let (status, ok) = api.post("/v1.0/robot/oToMessages/batchSend", body).await;
        assert_eq!(status, 200, "{ok}");
        assert_eq!(ok["invalidStaffIdList"], json!([]), "{ok}");
        assert_eq!(stack.sim.outbox().await.expect("outbox").len(), 1);
    });
}

/// The next CALLBACK frame on `ws`, as (stream `messageId`, the payload's `msgId`).
async fn next_bot_frame(ws: &mut Ws) -> (String, String) {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("stream open")
            .expect("frame");
        let Ok(text) = msg.to_text() else { continue };
        let frame: Value = serde_json::from_str(text).expect("frame JSON");
        if frame["type"] != "CALLBACK" {
            continue;
        }
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        let message_id = frame["headers"]["messageId"].as_str().unwrap().to_string();
        return (message_id, data["msgId"].as_str().unwrap().to_string());
    }
}

#[test]
fn redelivery_can_reuse_or_renew_the_stream_message_id() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let (endpoint, ticket) = fresh_ticket(&stack).await;
        let mut ws = upgrade(&endpoint, &ticket).await.expect("connected");
        let injected = stack.sim.inject_text("hi", false).await.expect("inject");
        let (first, msg_id) = next_bot_frame(&mut ws).await;
        assert_eq!(injected["msgId"], msg_id.as_str());
        let path = format!("/_sim/messages/{first}/redeliver");
        let redeliver = |body: Value| {
            let (sim, path) = (&stack.sim, &path);
            async move { sim.post(path, &body).await.expect("redeliver") }
        };
        let same = redeliver(json!({})).await;
        assert_eq!(same["messageId"], first.as_str(), "{same}");
        assert_eq!(
            next_bot_frame(&mut ws).await,
            (first.clone(), msg_id.clone())
        );
        let renewed = redeliver(json!({"new_message_id": true})).await;
        let (second, second_msg_id) = next_bot_frame(&mut ws).await;
        assert_ne!(second, first, "a fresh stream messageId");
        assert_eq!(second_msg_id, msg_id, "the same message");
        assert_eq!(renewed["messageId"], second.as_str(), "{renewed}");
    });
}

/// The simulator serves the DingTalk endpoints the bot calls, not others: the old-host
/// `gettoken`, the separate card create / deliver calls and interactive cards are gone.
#[test]
fn endpoints_the_bot_never_calls_are_not_served() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let api = Api::new(&stack.sim_url).await;
        let card = card("c1", "dtv1.card//IM_GROUP.cidA==");
        for (method, path) in [
            (reqwest::Method::POST, "/v1.0/card/instances"),
            (reqwest::Method::POST, "/v1.0/card/instances/deliver"),
            (
                reqwest::Method::POST,
                "/v1.0/im/v1.0/robot/interactiveCards/send",
            ),
            (reqwest::Method::PUT, "/v1.0/im/robots/interactiveCards"),
            (reqwest::Method::GET, "/gettoken"),
        ] {
            let (status, body) = api.call(method.clone(), path, card.clone()).await;
            assert!(
                status == 404 || status == 405,
                "{method} {path}: {status} {body}"
            );
        }
    });
}
