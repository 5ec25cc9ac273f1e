//! The simulator rejects what DingTalk rejects, the way DingTalk does: the OpenAPI with
//! HTTP 400 and a `{code, message, requestid}` body naming the field, the old `oapi` and
//! webhook endpoints with `{errcode, errmsg}`; and nothing rejected leaves state behind. A
//! client that passes against the simulator must not be relying on it being lenient.

mod support;

use clawdbot::model::demo::FakeConfig;
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
            &api.post("/v1.0/card/instances", no_id).await,
            "invalidParameter.outTrackId.empty",
        );
        let mut no_tpl = card("x", "dtv1.card//IM_GROUP.cidA==");
        no_tpl["cardTemplateId"] = json!("");
        assert_rejected(
            &api.post("/v1.0/card/instances", no_tpl).await,
            "invalidParameter.cardTemplateId.empty",
        );
        let mut not_strings = card("x", "dtv1.card//IM_GROUP.cidA==");
        not_strings["cardData"]["cardParamMap"]["n"] = json!(1);
        assert_rejected(
            &api.post("/v1.0/card/instances", not_strings).await,
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
        assert_rejected(
            &api.put("/v1.0/im/robots/interactiveCards", json!({"cardBizId": "b1"}))
                .await,
            "invalidParameter.cardData.invalid",
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
        let now = clawdbot::sim::state::now_ms();
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
fn gettoken_checks_the_app_key_and_secret() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    stack.rt.block_on(async {
        let good = plain(
            &stack,
            &format!("/gettoken?appkey={CLIENT_ID}&appsecret={CLIENT_SECRET}"),
            None,
        )
        .await;
        assert_eq!(good["errcode"], 0, "{good}");
        assert!(good["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(good["expires_in"].as_u64().is_some_and(|s| s > 0));
        let bad = plain(
            &stack,
            &format!("/gettoken?appkey={CLIENT_ID}&appsecret=wrong"),
            None,
        )
        .await;
        assert_eq!(bad["errcode"], 40096, "{bad}");
        let missing = plain(&stack, "/gettoken", None).await;
        assert_eq!(missing["errcode"], 40035, "{missing}");
    });
}
