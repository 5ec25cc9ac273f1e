//! The DingTalk channel against the in-process simulator over loopback: stream ingress,
//! ACKs, pings, disconnect/reconnect, dedupe, replies and their fallbacks, tokens, cards,
//! callback mode. Every wait is a bounded poll.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clawdbot::config::{ConversationKind, DingTalkConfig, DingTalkMode, Secret};
use clawdbot::dingtalk::stream::StreamTuning;
use clawdbot::dingtalk::{Channel, ChannelError, ChannelTuning, Inbound, InboundContent};
use clawdbot::listen::ListenLimits;
use clawdbot::sim::{SimClient, SimOptions, SimServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn config(base: &str) -> DingTalkConfig {
    DingTalkConfig {
        client_id: clawdbot::sim::state::DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(clawdbot::sim::state::DEFAULT_CLIENT_SECRET),
        robot_code: None,
        mode: DingTalkMode::Stream,
        api_base: base.into(),
        oapi_base: None,
        http_listen: "127.0.0.1:0".into(),
        card_template_id: None,
        card_content_key: "msgContent".into(),
        targets: BTreeMap::from([("ops".to_string(), "cidOpsGroup==".to_string())]),
        send_rate: Default::default(),
        webhook_hosts: Vec::new(),
    }
}

fn fast() -> ChannelTuning {
    ChannelTuning {
        stream: StreamTuning {
            keepalive_idle: Duration::from_millis(300),
            pong_timeout: Duration::from_millis(600),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
        },
        ..Default::default()
    }
}

struct Rig {
    sim: SimServer,
    client: SimClient,
    channel: Channel,
    rx: mpsc::Receiver<Inbound>,
}

async fn rig_with(opts: SimOptions, tweak: impl FnOnce(&mut DingTalkConfig)) -> Rig {
    rig_tuned(opts, tweak, fast()).await
}

async fn rig_tuned(
    opts: SimOptions,
    tweak: impl FnOnce(&mut DingTalkConfig),
    tuning: ChannelTuning,
) -> Rig {
    let sim = SimServer::start(opts).await.expect("sim starts");
    let client = SimClient::new(sim.base_url());
    let mut cfg = config(sim.base_url());
    tweak(&mut cfg);
    let (tx, rx) = mpsc::channel(64);
    let channel = Channel::start_with(cfg, tx, tuning)
        .await
        .expect("channel starts");
    Rig {
        sim,
        client,
        channel,
        rx,
    }
}

async fn rig() -> Rig {
    let r = rig_with(SimOptions::default(), |_| {}).await;
    r.wait_connected(1).await;
    r
}

impl Rig {
    async fn wait_connected(&self, live: usize) -> Value {
        self.client
            .wait_for("/_sim/connections", WAIT, |v| {
                v["connections"]
                    .as_array()
                    .is_some_and(|c| c.iter().filter(|c| c["live"] == true).count() >= live)
            })
            .await
            .expect("channel connected to the sim")
    }

    async fn next(&mut self) -> Inbound {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an inbound message in time")
            .expect("channel open")
    }

    async fn inject(&self, req: Value) -> Value {
        self.client.inject(&req).await.expect("inject")
    }
}

#[tokio::test]
async fn inject_is_acked_and_delivered_once_with_parsed_fields() {
    let mut r = rig().await;
    let inj = r
        .inject(json!({"text": "deploy status?", "conversation_type": "group", "sender_staff_id": "0423001", "sender_nick": "Li Lei"}))
        .await;
    let m = r.next().await;
    assert_eq!(m.msg_id, inj["msgId"].as_str().unwrap());
    assert_eq!(m.content, InboundContent::Text("deploy status?".into()));
    assert_eq!(m.conversation_kind, ConversationKind::Group);
    assert_eq!(m.sender_staff_id.as_deref(), Some("0423001"));
    assert_eq!(m.conversation_title.as_deref(), Some("Sim Group"));
    let mid = inj["messageId"].as_str().unwrap().to_string();
    let acks = r
        .client
        .wait_for("/_sim/acks", WAIT, |v| {
            v["acks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["messageId"] == mid.as_str())
        })
        .await
        .unwrap();
    let ack = acks["acks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["messageId"] == mid.as_str())
        .unwrap()["ack"]
        .clone();
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["contentType"], "application/json");
    assert!(ack["data"].is_string());
    assert_eq!(r.channel.report().messages_in, 1);
    assert_eq!(r.channel.report().state, "connected");
    // The open request carried Accept and the subscriptions.
    let conns = r.client.get("/_sim/connections").await.unwrap();
    assert_eq!(
        conns["opens"][0]["request"]["subscriptions"][0]["topic"],
        "/v1.0/im/bot/messages/get"
    );
    r.channel.shutdown().await;
    r.sim.shutdown().await;
}

#[tokio::test]
async fn redelivered_message_reaches_the_bot_once() {
    let mut r = rig().await;
    let inj = r.inject(json!({"text": "hi"})).await;
    r.next().await;
    let mid = inj["messageId"].as_str().unwrap();
    r.client
        .post(&format!("/_sim/messages/{mid}/redeliver"), &json!({}))
        .await
        .unwrap();
    r.inject(json!({"text": "second"})).await;
    let m = r.next().await;
    assert_eq!(
        m.content,
        InboundContent::Text("second".into()),
        "the duplicate must not reach the bot"
    );
    assert_eq!(r.channel.report().duplicates_dropped, 1);
    // Both deliveries were ACKed.
    let acks = r.client.get("/_sim/acks").await.unwrap();
    assert_eq!(
        acks["acks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["messageId"] == mid)
            .count(),
        2
    );
}

#[tokio::test]
async fn ping_is_echoed() {
    let opts = SimOptions {
        ping_interval_ms: 100,
        ..SimOptions::default()
    };
    let r = rig_with(opts, |_| {}).await;
    r.client
        .wait_for("/_sim/connections", WAIT, |v| {
            v["connections"][0]["pings_echoed"].as_u64().unwrap_or(0) >= 2
        })
        .await
        .expect("pings echoed");
    let acks = r.client.get("/_sim/acks").await.unwrap();
    let ping_ack = acks["acks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["messageId"].as_str().unwrap().starts_with("ping_"))
        .cloned()
        .unwrap();
    let data: Value = serde_json::from_str(ping_ack["ack"]["data"].as_str().unwrap()).unwrap();
    assert!(data["opaque"].is_string(), "ping data echoed: {ping_ack}");
}

#[tokio::test]
async fn disconnect_opens_a_new_connection_with_a_new_ticket_first() {
    let mut r = rig().await;
    r.client
        .post("/_sim/connections/all/disconnect", &json!({}))
        .await
        .unwrap();
    let v = r
        .client
        .wait_for("/_sim/connections", WAIT, |v| {
            v["connections"].as_array().unwrap().len() >= 2
        })
        .await
        .unwrap();
    let tickets: Vec<&str> = v["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tickets.len(), 2);
    assert_ne!(tickets[0], tickets[1]);
    // The new connection opened before the old one closed.
    let c = v["connections"].as_array().unwrap();
    let old_closed = c[0]["closed_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(c[1]["opened_ms"].as_u64().unwrap() <= old_closed);
    r.inject(json!({"text": "after"})).await;
    assert_eq!(r.next().await.content, InboundContent::Text("after".into()));
    assert!(r.channel.report().reconnects >= 1);
}

#[tokio::test]
async fn silent_socket_is_detected_and_replaced() {
    let mut r = rig().await;
    r.client
        .post("/_sim/connections/all/silence", &json!({}))
        .await
        .unwrap();
    r.client
        .wait_for("/_sim/connections", WAIT, |v| {
            v["connections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["live"] == true && c["silent"] == false && c["id"] != 1)
        })
        .await
        .expect("a fresh connection after the zombie");
    r.inject(json!({"text": "x"})).await;
    r.next().await;
    assert!(r
        .channel
        .report()
        .last_error
        .unwrap_or_default()
        .contains("ping"));
}

#[tokio::test]
async fn bad_ticket_and_open_failure_are_retried() {
    let sim = SimServer::start(SimOptions::default()).await.unwrap();
    let client = SimClient::new(sim.base_url());
    client
        .faults(json!({"bad_ticket": 1, "open_500": 1}))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let ch = Channel::start_with(config(sim.base_url()), tx, fast())
        .await
        .unwrap();
    client
        .wait_for("/_sim/connections", WAIT, |v| {
            v["connections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["live"] == true)
        })
        .await
        .unwrap();
    client.inject_text("hello", false).await.unwrap();
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(ch.report().last_error.is_some());
}

#[tokio::test]
async fn wrong_secret_never_connects_and_check_explains() {
    let sim = SimServer::start(SimOptions::default()).await.unwrap();
    let mut cfg = config(sim.base_url());
    cfg.client_secret = Secret::new("wrong");
    let (tx, _rx) = mpsc::channel(8);
    let ch = Channel::start_with(cfg, tx, fast())
        .await
        .expect("start returns even when DingTalk refuses");
    let err = ch.check().await.unwrap_err().to_string();
    assert!(
        err.contains("access token") && err.contains("client_secret"),
        "{err}"
    );
    assert_ne!(ch.report().state, "connected");
}

#[tokio::test]
async fn reply_in_group_uses_session_webhook_and_mentions_the_asker() {
    let mut r = rig().await;
    r.inject(json!({"text": "q", "conversation_type": "group", "sender_staff_id": "0423001"}))
        .await;
    let m = r.next().await;
    r.channel.reply(&m, "**answer**", true).await.unwrap();
    let out = r.client.wait_outbox(1, WAIT).await.unwrap();
    assert_eq!(out[0]["route"], "session_webhook");
    assert_eq!(out[0]["msgtype"], "markdown");
    assert_eq!(out[0]["at_user_ids"][0], "0423001");
    assert!(out[0]["text"].as_str().unwrap().starts_with("**answer**"));
    assert_eq!(r.channel.report().messages_out, 1);
    assert!(r.channel.check().await.is_ok());
}

#[tokio::test]
async fn gone_session_falls_back_to_openapi() {
    let mut r = rig().await;
    r.inject(json!({"text": "q", "conversation_type": "group"}))
        .await;
    let g = r.next().await;
    r.inject(json!({"text": "q2", "conversation_type": "direct", "sender_staff_id": "u77"}))
        .await;
    let d = r.next().await;
    r.client.faults(json!({"session_300001": 1})).await.unwrap();
    r.channel.reply(&g, "to group", false).await.unwrap();
    r.client
        .post("/_sim/sessions/expire", &json!({}))
        .await
        .unwrap();
    r.channel.reply(&d, "to user", false).await.unwrap();
    // An Inbound whose session expired by its own timestamp never tries the webhook.
    let mut stale = d.clone();
    stale.session_webhook_expires_ms = Some(1);
    r.channel.reply(&stale, "stale", true).await.unwrap();
    let out = r.client.wait_outbox(3, WAIT).await.unwrap();
    assert_eq!(out[0]["route"], "group_send");
    assert_eq!(out[0]["conversation_id"], g.conversation_id.as_str());
    assert_eq!(out[0]["text"], "to group");
    assert_eq!(out[1]["route"], "batch_send");
    assert_eq!(out[1]["user_ids"][0], "u77");
    assert_eq!(out[2]["route"], "batch_send");
    assert_eq!(out[2]["msg_key"], "sampleMarkdown");
    assert!(
        out[0]["body"]["msgParam"].is_string(),
        "msgParam is a JSON string"
    );
}

#[tokio::test]
async fn token_is_refreshed_once_on_invalid_authentication() {
    let r = rig().await;
    let out = r.channel.send("ops", "one", false).await.unwrap();
    assert_eq!(out.route, "group_send");
    assert_eq!(out.target, "cidOpsGroup==");
    r.client.faults(json!({"invalid_auth": 1})).await.unwrap();
    r.channel.send("user:0423001", "two", false).await.unwrap();
    let t = r.client.get("/_sim/tokens").await.unwrap();
    assert_eq!(
        t["issued"], 2,
        "a fresh token after InvalidAuthentication: {t}"
    );
    r.client.faults(json!({"invalid_auth": 2})).await.unwrap();
    let err = r.channel.send("cidX==", "three", false).await.unwrap_err();
    assert!(err.to_string().contains("InvalidAuthentication"), "{err}");
    assert!(r.channel.send("nonsense", "x", false).await.is_err());
    // An unknown target is the caller's mistake, not a failed send: not counted.
    assert_eq!(r.channel.report().send_failures, 1);
    assert_eq!(r.client.outbox().await.unwrap().len(), 2);
}

#[tokio::test]
async fn qps_403_and_flow_control_are_retried() {
    let r = rig().await;
    r.client
        .faults(json!({"qps_403": 1, "flow_control": 1}))
        .await
        .unwrap();
    r.channel.send("cidA==", "a", false).await.unwrap();
    r.channel.send("user:u1", "b", false).await.unwrap();
    let out = r.client.wait_outbox(2, WAIT).await.unwrap();
    assert_eq!(
        out[1]["route"], "batch_send",
        "flow-controlled user retried later"
    );
    // 25 sends stay within the sim's real 20 QPS limit thanks to the client limiter.
    for i in 0..25 {
        r.channel
            .send("cidB==", &format!("m{i}"), false)
            .await
            .unwrap();
    }
    assert_eq!(r.client.outbox().await.unwrap().len(), 27);
}

#[tokio::test]
async fn long_answer_is_split_under_the_limits() {
    let mut r = rig().await;
    r.inject(json!({"text": "q"})).await;
    let m = r.next().await;
    let long = "line of a long answer with \"quotes\"\n".repeat(1_000);
    r.channel.set_max_parts(20);
    r.channel.reply(&m, &long, true).await.unwrap();
    let out = r.client.outbox().await.unwrap();
    assert!(out.len() >= 3, "split into {} chunks", out.len());
    for e in &out {
        assert_eq!(e["route"], "session_webhook");
        assert!(serde_json::to_string(&e["body"]).unwrap().len() <= 20_000);
    }
    let joined: String = out
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(joined.replace('\n', ""), long.replace('\n', ""));
}

#[tokio::test]
async fn msgtypes_are_parsed() {
    let mut r = rig().await;
    r.inject(json!({"msgtype": "audio", "text": "voice words"}))
        .await;
    assert_eq!(
        r.next().await.content,
        InboundContent::Text("voice words".into())
    );
    r.inject(json!({"msgtype": "richText", "text": "rich"}))
        .await;
    assert_eq!(r.next().await.content, InboundContent::Text("rich".into()));
    for t in ["picture", "video", "file", "unknownMsgType"] {
        r.inject(json!({"msgtype": t})).await;
        assert_eq!(
            r.next().await.content,
            InboundContent::Unsupported { msgtype: t.into() }
        );
    }
}

#[tokio::test]
async fn ai_card_streams_and_always_finalizes() {
    let mut r = rig_with(SimOptions::default(), |c| {
        c.card_template_id = Some("tpl.schema".into())
    })
    .await;
    r.wait_connected(1).await;
    r.inject(json!({"text": "q", "conversation_type": "group"}))
        .await;
    let m = r.next().await;
    let mut card = r.channel.open_card(&m).await.unwrap();
    let id = card.out_track_id().to_string();
    card.update("partial").await;
    card.update("partial and more").await; // throttled (<300 ms)
    card.finish("final answer").await.unwrap();
    let cards = r.client.get("/_sim/cards").await.unwrap();
    let c = &cards["cards"][&id];
    assert_eq!(c["params"]["flowStatus"], "3");
    assert_eq!(c["params"]["msgContent"], "final answer");
    assert_eq!(c["streaming"]["msgContent"], "final answer");
    assert_eq!(c["finalized"], true);
    assert_eq!(c["flow_history"], json!(["1", "2", "3"]));
    assert_eq!(c["stream_updates"], 2);
    assert_eq!(c["deliveries"][0]["spaceType"], "IM_GROUP");
    // Dropped without finishing: failed in the background.
    let card2 = r.channel.open_card(&m).await.unwrap();
    let id2 = card2.out_track_id().to_string();
    drop(card2);
    r.client
        .wait_for("/_sim/cards", WAIT, |v| {
            v["cards"][&id2]["params"]["flowStatus"] == "5"
        })
        .await
        .expect("abandoned card is FAILED");
}

#[tokio::test]
async fn callback_mode_verifies_signatures() {
    let sim = SimServer::start(SimOptions::default()).await.unwrap();
    let client = SimClient::new(sim.base_url());
    let mut cfg = config(sim.base_url());
    cfg.mode = DingTalkMode::Http;
    let (tx, mut rx) = mpsc::channel(8);
    let ch = Channel::start(cfg, tx).await.unwrap();
    assert_eq!(ch.report().state, "listening");
    let url = format!("http://{}/", ch.callback_addr().unwrap());
    let good = client
        .inject(&json!({"text": "signed", "callback_url": url}))
        .await
        .unwrap();
    assert_eq!(good["callback_status"], 200);
    let m = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.content, InboundContent::Text("signed".into()));
    let bad = client
        .inject(&json!({"text": "forged", "callback_url": url, "sign": "AAAA"}))
        .await
        .unwrap();
    assert_eq!(bad["callback_status"], 401);
    let old = client
        .inject(&json!({"text": "old", "callback_url": url, "timestamp_ms": clawdbot::clock::now_ms() - 3_700_000}))
        .await
        .unwrap();
    assert_eq!(old["callback_status"], 401);
    assert!(
        rx.try_recv().is_err(),
        "refused callbacks never reach the bot"
    );
    ch.shutdown().await;
}

#[tokio::test]
async fn a_redelivery_under_a_new_message_id_is_caught_by_its_msg_id() {
    let mut r = rig().await;
    let inj = r.inject(json!({"text": "once"})).await;
    r.next().await;
    let mid = inj["messageId"].as_str().unwrap();
    let again = r
        .client
        .post(
            &format!("/_sim/messages/{mid}/redeliver"),
            &json!({"new_message_id": true}),
        )
        .await
        .unwrap();
    assert_ne!(again["messageId"], inj["messageId"], "{again}");
    r.inject(json!({"text": "next"})).await;
    assert_eq!(
        r.next().await.content,
        InboundContent::Text("next".into()),
        "the same msgId under a new messageId must not reach the bot"
    );
    assert_eq!(r.channel.report().duplicates_dropped, 1);
}

#[tokio::test]
async fn gateway_timeouts_are_retried_once_and_busy_webhooks_fall_through_to_the_openapi() {
    let mut r = rig().await;
    // OpenAPI 504: one retry succeeds; two in a row fail naming the status.
    r.client.faults(json!({"gateway_504": 1})).await.unwrap();
    r.channel
        .send("cidA==", "after one 504", false)
        .await
        .unwrap();
    r.client.faults(json!({"gateway_504": 2})).await.unwrap();
    let err = r
        .channel
        .send("cidA==", "after two 504s", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("504"), "{err}");
    // Session webhook errcode -1 ("system busy"): one retry succeeds; twice in a row, the
    // reply goes through the OpenAPI instead of failing.
    r.inject(json!({"text": "q", "conversation_type": "group", "sender_staff_id": "0423001"}))
        .await;
    let msg = r.next().await;
    r.client.faults(json!({"webhook_busy": 1})).await.unwrap();
    r.channel.reply(&msg, "busy once", false).await.unwrap();
    r.client.faults(json!({"webhook_busy": 2})).await.unwrap();
    r.channel.reply(&msg, "busy twice", false).await.unwrap();
    let out = r.client.outbox().await.unwrap();
    let sent: Vec<(&str, &str)> = out
        .iter()
        .map(|e| {
            (
                e["route"].as_str().unwrap_or_default(),
                e["text"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("group_send", "after one 504"),
            ("session_webhook", "busy once"),
            ("group_send", "busy twice")
        ],
        "nothing sent twice, nothing lost"
    );
    assert_eq!(out[2]["conversation_id"], msg.conversation_id.as_str());
}

#[tokio::test]
async fn a_failing_session_webhook_falls_through_to_the_openapi_and_resumes_after_sent_parts() {
    let mut r = rig().await;
    // 1:1: the OpenAPI fallback is a batchSend to the sender's staff id.
    r.inject(json!({"text": "q", "conversation_type": "direct", "sender_staff_id": "u42"}))
        .await;
    let direct = r.next().await;
    r.client.faults(json!({"webhook_busy": 2})).await.unwrap();
    r.channel.reply(&direct, "to u42", false).await.unwrap();
    // Without a staff id there is nowhere else to send: the webhook's error is returned.
    let mut anonymous = direct.clone();
    anonymous.sender_staff_id = None;
    r.client.faults(json!({"webhook_busy": 2})).await.unwrap();
    let err = r
        .channel
        .reply(&anonymous, "nowhere", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("errcode -1"), "{err}");
    // Both routes down: the error names the OpenAPI, and nothing counts as sent.
    let mut both_down = r.channel.outgoing("lost?", false);
    r.client
        .faults(json!({"webhook_busy": 2, "gateway_504": 2}))
        .await
        .unwrap();
    let err = r
        .channel
        .reply_parts(&direct, &mut both_down)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("504"), "{err}");
    assert_eq!(both_down.sent(), 0);
    // A reply whose first part already went out sends only the rest.
    let long = format!("{}\n{}", "a".repeat(3_000), "b".repeat(3_000));
    let mut resumed = r.channel.outgoing(&long, false);
    assert_eq!(resumed.parts(), 2);
    resumed.mark_sent();
    r.channel.reply_parts(&direct, &mut resumed).await.unwrap();
    assert!(resumed.is_done());
    let out = r.client.outbox().await.unwrap();
    let sent: Vec<(&str, String)> = out
        .iter()
        .map(|e| {
            let text = e["text"].as_str().unwrap_or_default();
            (
                e["route"].as_str().unwrap_or_default(),
                text.chars().take(6).collect(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("batch_send", "to u42".to_string()),
            ("session_webhook", "bbbbbb".to_string())
        ]
    );
    assert_eq!(out[0]["user_ids"][0], "u42");
}

#[tokio::test]
async fn a_send_to_users_dingtalk_calls_invalid_is_reported_undelivered() {
    let r = rig().await;
    r.client.faults(json!({"invalid_staff": 1})).await.unwrap();
    let err = r
        .channel
        .send("user:nobody", "hello", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not deliver"), "{err}");
    assert!(r.client.outbox().await.unwrap().is_empty());
    r.channel
        .send("user:0423001", "hello", false)
        .await
        .unwrap();
}

/// The most entries of `out` whose `at_us` (when the simulator got them) fall inside any
/// half-open 1 s interval.
pub(crate) fn busiest_second(out: &[Value]) -> usize {
    let mut at: Vec<u64> = out.iter().filter_map(|e| e["at_us"].as_u64()).collect();
    at.sort_unstable();
    (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] < 1_000_000)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Sends `n` replies to `m` at once.
async fn flood_replies(r: &Rig, m: &Inbound, n: usize) {
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let (channel, m) = (r.channel.clone(), m.clone());
            tokio::spawn(async move { channel.reply(&m, &format!("part {i}"), false).await })
        })
        .collect();
    for s in sends {
        s.await.expect("task").expect("delivered");
    }
}

#[tokio::test]
async fn session_webhook_sends_obey_the_robot_rate_in_any_sliding_second() {
    // Issue 10 item 6: 50 sends went out 20 per calendar second but 22-35 within a sliding
    // second, and session webhooks were not limited at all.
    let mut r = rig_with(SimOptions::default(), |c| {
        c.send_rate.per_conversation = 1_000
    })
    .await;
    r.wait_connected(1).await;
    r.inject(json!({"text": "q", "conversation_type": "group"}))
        .await;
    let m = r.next().await;
    flood_replies(&r, &m, 50).await;
    let out = r.client.wait_outbox(50, WAIT).await.unwrap();
    assert_eq!(out.len(), 50);
    assert!(out.iter().all(|e| e["route"] == "session_webhook"));
    let busiest = busiest_second(&out);
    assert!(busiest <= 20, "{busiest} sends within one sliding second");
}

#[tokio::test]
async fn one_conversation_is_held_to_its_own_rate_and_a_reply_to_max_parts() {
    let mut r = rig().await;
    r.inject(json!({"text": "q", "conversation_type": "group"}))
        .await;
    let m = r.next().await;
    flood_replies(&r, &m, 12).await;
    let out = r.client.wait_outbox(12, WAIT).await.unwrap();
    let busiest = busiest_second(&out);
    assert!(
        busiest <= 5,
        "{busiest} sends to one conversation within a sliding second"
    );
    // A 1 MB answer becomes at most reply.max_parts (default 4) messages, the last one
    // marked as cut.
    let before = r.client.outbox().await.unwrap().len();
    r.channel
        .reply(&m, &"word ".repeat(200_000), false)
        .await
        .unwrap();
    let out = r.client.outbox().await.unwrap();
    let parts = &out[before..];
    assert_eq!(parts.len(), 4, "one reply, at most max_parts messages");
    assert!(parts[3]["text"]
        .as_str()
        .unwrap()
        .ends_with(clawdbot::model::ANSWER_CUT_MARK));
}

#[tokio::test]
async fn a_reply_ends_within_the_delivery_limit() {
    // Issue 10 item 6: the turn's budget holds through delivery. A session webhook that
    // accepts and never answers, and a send slot that would come too late, both end the
    // reply at the limit (the HTTP client alone would wait 15 s, twice).
    let limit = Duration::from_millis(600);
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_origin = format!("http://{}", hole.local_addr().expect("addr"));
    let mut r = rig_tuned(
        SimOptions::default(),
        |c| {
            c.send_rate.per_conversation = 1;
            // The silent webhook must be on the allowlist, or the reply takes the OpenAPI.
            c.webhook_hosts = vec![hole_origin.clone()];
        },
        ChannelTuning {
            delivery_limit: limit,
            ..fast()
        },
    )
    .await;
    r.wait_connected(1).await;
    // A new channel's robot window counts as full for its first 1.05 s (sends of a
    // process before a restart are unknown): let it pass so only this test's sends count.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    r.inject(json!({"text": "q", "conversation_type": "group"}))
        .await;
    let m = r.next().await;
    let mut silent = m.clone();
    silent.session_webhook = Some(format!("{hole_origin}/robot/sendBySession?session=x"));
    // A busy reply cut off at the limit is no failure of the channel (not counted, no
    // WARN): its message ends without it, like one the send rate refused.
    let mut busy = r.channel.outgoing("busy", false).yielding();
    let e = r.channel.reply_parts(&silent, &mut busy).await.unwrap_err();
    assert!(matches!(e, ChannelError::NoSlotForBusyReply(600)), "{e}");
    assert_eq!(r.channel.report().send_failures, 0);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // its slot's window ends
    let t = std::time::Instant::now();
    let e = r.channel.reply(&silent, "hi", false).await.unwrap_err();
    assert!(matches!(e, ChannelError::DeliveryLate(600)), "{e}");
    assert_eq!(r.channel.report().send_failures, 1);
    // Cut at the 600 ms limit, far below the HTTP client's own 15 s (a generous bound for
    // a loaded machine; the exact timing is tested on paused time in dingtalk::limiter).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The given-up send counts until 1 s after it was given up (DingTalk may have got it
    // at any time until then, red-team F5): a reply now would have to wait past the
    // limit, so it is refused at once.
    // "At once" (no wait for the slot) is shown on paused time by
    // `dingtalk::limiter::tests::a_slot_past_the_deadline_is_refused_without_waiting`.
    let e = r.channel.reply(&m, "early", false).await.unwrap_err();
    assert!(matches!(e, ChannelError::DeliveryLate(_)), "{e}");
    // Once that window has passed the slot is free: sent.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    r.channel.reply(&m, "one", false).await.expect("sent");
    // The next slot is 1 s away, past the limit: refused at once.
    let e = r.channel.reply(&m, "two", false).await.unwrap_err();
    assert!(matches!(e, ChannelError::DeliveryLate(_)), "{e}");
    let texts: Vec<Value> = r
        .client
        .outbox()
        .await
        .unwrap()
        .iter()
        .map(|e| e["text"].clone())
        .collect();
    assert_eq!(texts, [json!("one")]);
    drop(hole);
}

/// A callback rig: the simulator and a channel in HTTP callback mode with `limits`.
async fn callback_rig(limits: ListenLimits) -> (Rig, String) {
    let tuning = ChannelTuning {
        callback: limits,
        ..fast()
    };
    let r = rig_tuned(
        SimOptions::default(),
        |c| c.mode = DingTalkMode::Http,
        tuning,
    )
    .await;
    let url = format!("http://{}/", r.channel.callback_addr().unwrap());
    (r, url)
}

/// POSTs `body` to the callback `url` with the given `timestamp` and `sign` headers.
async fn post_signed(url: &str, ts: &str, sign: &str, body: &Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("timestamp", ts)
        .header("sign", sign)
        .json(body)
        .timeout(WAIT)
        .send()
        .await
        .expect("callback answered");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn robot_message(msg_id: &str, text: &str) -> Value {
    json!({"msgId": msg_id, "conversationId": "cidReplay==", "conversationType": "2",
        "msgtype": "text", "text": {"content": text}, "senderStaffId": "0423001",
        "senderNick": "Li", "robotCode": clawdbot::sim::state::DEFAULT_CLIENT_ID})
}

#[tokio::test]
async fn a_captured_timestamp_and_sign_are_refused_the_second_time() {
    let (mut r, url) = callback_rig(ListenLimits::http_default()).await;
    let ts = clawdbot::clock::now_ms().to_string();
    let sign =
        clawdbot::sim::sign::callback_signature(&ts, clawdbot::sim::state::DEFAULT_CLIENT_SECRET);
    let first = robot_message("msgReplay1", "genuine");
    assert_eq!(post_signed(&url, &ts, &sign, &first).await.0, 200);
    assert_eq!(
        r.next().await.content,
        InboundContent::Text("genuine".into())
    );
    // The very same request again, then the captured pair carrying another body.
    let (status, body) = post_signed(&url, &ts, &sign, &first).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("replay"), "{body}");
    let forged = robot_message("msgReplay2", "forged with a captured pair");
    assert_eq!(post_signed(&url, &ts, &sign, &forged).await.0, 409);
    // A fresh pair is fine; the refused ones never reached the bot.
    let ts2 = (clawdbot::clock::now_ms() + 1).to_string();
    let sign2 =
        clawdbot::sim::sign::callback_signature(&ts2, clawdbot::sim::state::DEFAULT_CLIENT_SECRET);
    let next = robot_message("msgReplay3", "next");
    assert_eq!(post_signed(&url, &ts2, &sign2, &next).await.0, 200);
    assert_eq!(r.next().await.content, InboundContent::Text("next".into()));
    assert!(r.rx.try_recv().is_err());
    assert_eq!(r.channel.report().messages_in, 2);
}

/// Counts connections made to a test-owned listener on 127.0.0.2 (not the simulator's host).
async fn collector() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (
        format!("http://{addr}/robot/sendBySession?session=stolen"),
        hits,
    )
}

#[tokio::test]
async fn a_foreign_session_webhook_is_never_posted_to_in_either_mode() {
    let (hook, hits) = collector().await;
    for mode in [DingTalkMode::Stream, DingTalkMode::Http] {
        let mut r = rig_with(SimOptions::default(), |c| c.mode = mode).await;
        let mut req = json!({"text": "q", "conversation_type": "group",
            "conversation_id": "cidForeign==", "session_webhook": hook});
        if mode == DingTalkMode::Http {
            req["callback_url"] = json!(format!("http://{}/", r.channel.callback_addr().unwrap()));
        } else {
            r.wait_connected(1).await;
        }
        r.inject(req).await;
        let m = r.next().await;
        assert_eq!(m.session_webhook.as_deref(), Some(hook.as_str()));
        r.channel
            .reply(&m, "the model's answer", false)
            .await
            .unwrap();
        // reply() has returned: any POST to the collector would have happened by now.
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{mode:?}: posted to a foreign host"
        );
        let out = r.client.wait_outbox(1, WAIT).await.unwrap();
        assert_eq!(out[0]["route"], "group_send", "{mode:?}");
        assert_eq!(out[0]["conversation_id"], "cidForeign==");
        assert_eq!(out[0]["text"], "the model's answer");
        r.channel.shutdown().await;
    }
}

#[tokio::test]
async fn a_negative_webhook_expiry_is_expired() {
    let mut r = rig().await;
    r.inject(json!({"text": "q", "conversation_type": "group",
        "conversation_id": "cidNegative==", "session_webhook_expired_time": -1}))
        .await;
    let m = r.next().await;
    assert_eq!(m.session_webhook_expires_ms, Some(0));
    r.channel.reply(&m, "answer", false).await.unwrap();
    let out = r.client.wait_outbox(1, WAIT).await.unwrap();
    assert_eq!(out[0]["route"], "group_send", "the webhook was not trusted");
}

#[tokio::test]
async fn idle_and_trickling_callback_connections_are_shed_while_signed_callbacks_get_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = ListenLimits {
        header_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        max_connections: 128,
    };
    let (mut r, url) = callback_rig(limits).await;
    let addr = r.channel.callback_addr().unwrap();
    let mut readers = Vec::new();
    for _ in 0..60 {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        readers.push(s.into_split().0);
    }
    for _ in 0..30 {
        let (rd, mut w) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        readers.push(rd);
        tokio::spawn(async move {
            let _ = w.write_all(b"POST / HTTP/1.1\r\n").await;
            for _ in 0..200 {
                if w.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let inj = r
        .inject(json!({"text": "through", "callback_url": url}))
        .await;
    assert_eq!(inj["callback_status"], 200, "{inj}");
    assert_eq!(
        r.next().await.content,
        InboundContent::Text("through".into())
    );
    // Every idle or trickling connection is closed by the listener, long before WAIT.
    for (i, mut rd) in readers.into_iter().enumerate() {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection {i} still open after {WAIT:?}");
    }
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare Stream connection of the default app (no bot behind it): ticket, then upgrade.
async fn raw_stream_connection(sim_url: &str) -> RawWs {
    let open: Value = reqwest::Client::new()
        .post(format!("{sim_url}/v1.0/gateway/connections/open"))
        .header("accept", "application/json")
        .json(&json!({"clientId": clawdbot::sim::state::DEFAULT_CLIENT_ID,
            "clientSecret": clawdbot::sim::state::DEFAULT_CLIENT_SECRET,
            "subscriptions": [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]}))
        .send()
        .await
        .expect("connections/open")
        .json()
        .await
        .expect("open answer");
    let url = format!(
        "{}?ticket={}",
        open["endpoint"].as_str().expect("endpoint"),
        open["ticket"].as_str().expect("ticket")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

/// The next robot-message frame on `ws` as (frame messageId, payload msgId); other frames
/// are skipped. `None` when the connection ended.
async fn next_push(ws: &mut RawWs) -> Option<(String, String)> {
    use futures_util::StreamExt;
    while let Some(msg) = ws.next().await {
        let Ok(tokio_tungstenite::tungstenite::Message::Text(text)) = msg else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("frame JSON");
        if frame["type"] != "CALLBACK" {
            continue;
        }
        let data: Value =
            serde_json::from_str(frame["data"].as_str().expect("data")).expect("data JSON");
        let id = |v: &Value| v.as_str().unwrap_or_default().to_string();
        return Some((id(&frame["headers"]["messageId"]), id(&data["msgId"])));
    }
    None
}

async fn ack(ws: &mut RawWs, message_id: &str) {
    use futures_util::SinkExt;
    let ack = json!({"code": 200, "headers": {"messageId": message_id, "contentType": "application/json"},
        "message": "OK", "data": "{\"response\":null}"});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        ack.to_string().into(),
    ))
    .await
    .expect("ack sent");
}

/// Reads pushes on connection `index` until it ends: each one is ACKed while `acking`
/// is set, and reported as (connection index, payload msgId, ACKed).
fn spawn_reader(
    index: usize,
    mut ws: RawWs,
    acking: Arc<std::sync::atomic::AtomicBool>,
    tx: mpsc::UnboundedSender<(usize, String, bool)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((message_id, msg_id)) = next_push(&mut ws).await {
            let acked = acking.load(Ordering::SeqCst);
            if acked {
                ack(&mut ws, &message_id).await;
            }
            if tx.send((index, msg_id, acked)).is_err() {
                return;
            }
        }
    })
}

/// Issue 14 item 5: with several Stream connections of one app, each push goes to one
/// live connection at random (DingTalk's behaviour, docs/dingtalk-protocol.md §1.4), and
/// a frame left un-ACKed on a connection that closed is redelivered on another one.
#[tokio::test]
async fn pushes_are_spread_over_an_apps_connections_and_unacked_ones_move_to_a_live_one() {
    use std::sync::atomic::AtomicBool;
    let sim = SimServer::start(SimOptions {
        ping_interval_ms: 0,
        redeliver_unacked_ms: Some(200),
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let client = SimClient::new(sim.base_url());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let acking = [
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    ];
    let mut readers = Vec::new();
    for (i, flag) in acking.iter().enumerate() {
        let ws = raw_stream_connection(sim.base_url()).await;
        readers.push(spawn_reader(i, ws, flag.clone(), tx.clone()));
    }
    client
        .wait_for("/_sim/connections", WAIT, |v| {
            v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().filter(|c| c["live"] == true).count() == 2)
        })
        .await
        .expect("two live connections before the first push");
    async fn next_seen(
        rx: &mut mpsc::UnboundedReceiver<(usize, String, bool)>,
    ) -> (usize, String, bool) {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a push in time")
            .expect("readers alive")
    }

    // 40 pushes: each reaches exactly one connection (all ACKed: no redelivery), and
    // both connections get some (all on one: probability 2^-39).
    const PUSHES: usize = 40;
    let mut ids = Vec::new();
    for i in 0..PUSHES {
        let injected = client
            .inject_text(&format!("m{i}"), true)
            .await
            .expect("inject");
        ids.push(injected["msgId"].as_str().expect("msgId").to_string());
    }
    let mut per_connection = [0usize; 2];
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..PUSHES {
        let (conn, msg_id, _) = next_seen(&mut rx).await;
        per_connection[conn] += 1;
        assert!(seen.insert(msg_id.clone()), "{msg_id} pushed twice");
    }
    assert_eq!(
        seen,
        ids.iter().cloned().collect(),
        "every push arrived once"
    );
    assert!(
        per_connection.iter().all(|n| *n > 0),
        "pushes spread over both connections: {per_connection:?}"
    );

    // Connection 0 stops ACKing; the first push it leaves un-ACKed is, once it closed,
    // redelivered on connection 1 (the only live one).
    acking[0].store(false, Ordering::SeqCst);
    let mut stranded = None;
    for i in 0..40 {
        client
            .inject_text(&format!("late{i}"), true)
            .await
            .expect("inject");
        let (conn, msg_id, acked) = next_seen(&mut rx).await;
        if conn == 0 {
            assert!(!acked);
            stranded = Some(msg_id);
            break;
        }
    }
    let stranded = stranded.expect("a push reached connection 0 within 40 (probability 2^-40)");
    readers[0].abort();
    let (conn, msg_id, acked) = next_seen(&mut rx).await;
    assert_eq!(
        (conn, msg_id.as_str(), acked),
        (1, stranded.as_str(), true),
        "redelivered on the live connection"
    );
    let messages = client.get("/_sim/messages").await.expect("messages");
    let entry = messages["messages"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["msgId"] == stranded.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["acked"], true, "{entry}");
    assert_eq!(
        entry["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{entry}"
    );
}

/// How [`echoing_api`] quotes the secret it was sent in its refusal.
#[derive(Clone, Copy, Debug)]
enum Echo {
    /// The whole request in `message`, with a forged line, ESC and 5 000 more characters.
    Whole,
    /// The same, every character written as a JSON `\uXXXX` escape.
    Escaped,
    /// The secret's first half at the end of `code`, the rest at the start of `message`.
    Split,
    /// A prefix of 15 characters, as a gateway that cuts its echo short.
    Prefix,
}

/// A DingTalk look-alike on loopback that answers every call HTTP 400, quoting `secret`
/// (when the call carried it, in its body or access-token header) as `echo` says; with
/// `token` set, the token call succeeds with it.
async fn echoing_api(token: Option<&'static str>, secret: &'static str, echo: Echo) -> String {
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| async move {
            if let (Some(token), "/v1.0/oauth2/accessToken") = (token, uri.path()) {
                let ok = json!({"accessToken": token, "expireIn": 7200}).to_string();
                return (axum::http::StatusCode::OK, ok);
            }
            let header = headers
                .get("x-acs-dingtalk-access-token")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let whole = format!(
                "refused {body} with {header}\n2026-12-06T00:00:00Z ERROR forged line \u{1b}[2J{}",
                "x".repeat(5_000)
            );
            let carried = body.contains(secret) || header == secret;
            let half = secret.len() / 2;
            let refusal = match echo {
                Echo::Whole => json!({"code": "Forbidden.Echo", "message": whole}).to_string(),
                Echo::Escaped => {
                    let escaped: String = whole
                        .encode_utf16()
                        .map(|u| format!("\\u{u:04x}"))
                        .collect();
                    format!(r#"{{"code":"Forbidden.Echo","message":"{escaped}"}}"#)
                }
                Echo::Split if carried => {
                    json!({"code": format!("Forbidden.Echo{}", &secret[..half]),
                    "message": format!("{} tail", &secret[half..])})
                    .to_string()
                }
                Echo::Prefix if carried => {
                    json!({"code": "Forbidden.Echo", "message": format!("\"{}", &secret[..15])})
                        .to_string()
                }
                _ => json!({"code": "Forbidden.Echo", "message": "no secret sent"}).to_string(),
            };
            (axum::http::StatusCode::BAD_REQUEST, refusal)
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An error text as status, healthcheck and the log show it: one line, no piece of the
/// secret of 8 characters or more, bounded, DingTalk's code kept.
fn assert_shown_safely(what: &str, text: &str, secret: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for piece in chars.windows(8) {
        let piece: String = piece.iter().collect();
        assert!(
            !text.contains(&piece),
            "{what} quotes {piece:?} of the secret: {text}"
        );
    }
    assert!(
        !text.contains(|c: char| c.is_control()),
        "{what} holds a control character: {text:?}"
    );
    assert!(text.len() < 1_000, "{what} is {} bytes long", text.len());
    assert!(
        text.contains("Forbidden.Echo"),
        "{what} lost DingTalk's code: {text}"
    );
}

#[tokio::test]
async fn an_api_error_quoting_the_app_secret_or_token_shows_neither_nor_a_forged_line() {
    let secret = "Sx9secretQWERTYzz1234567890abcdefXY";
    let token = "TOKENq7Zk9q7Zk9q7Zk9q7Zk9q7Zk9q7Zk9";
    for echo in [Echo::Whole, Echo::Escaped, Echo::Split, Echo::Prefix] {
        let what = |part: &str| format!("{echo:?}: {part}");
        let mut cfg = config(&echoing_api(None, secret, echo).await);
        cfg.client_secret = Secret::new(secret);
        let (tx, _rx) = mpsc::channel(8);
        let ch = Channel::start_with(cfg, tx, fast()).await.unwrap();
        let check = ch.check().await.unwrap_err().to_string();
        assert_shown_safely(&what("the health check"), &check, secret);
        let mut last = None;
        for _ in 0..100 {
            last = ch.report().last_error;
            if last.as_deref().is_some_and(|e| e.contains(OPEN_API_PATH)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last = last.expect("the channel reports the refusal");
        assert!(last.contains(OPEN_API_PATH), "{last}");
        assert_shown_safely(&what("the channel's last error"), &last, secret);
        ch.shutdown().await;

        let (tx, _rx) = mpsc::channel(8);
        let api = echoing_api(Some(token), token, echo).await;
        let ch = Channel::start_with(config(&api), tx, fast()).await.unwrap();
        let sent = ch
            .send("ops", "hello", false)
            .await
            .unwrap_err()
            .to_string();
        assert_shown_safely(&what("a send's error"), &sent, token);
        let last = ch
            .report()
            .last_error
            .expect("the send's refusal is reported");
        assert_shown_safely(&what("the last error after a send"), &last, token);
        ch.shutdown().await;
    }
}

const OPEN_API_PATH: &str = "/v1.0/gateway/connections/open";

/// What [`refusing_api`] answers a group send with.
#[derive(Clone, Copy, Debug)]
enum SendAnswer {
    /// HTTP 200 with the new API's error shape, as a gateway in front of DingTalk may.
    OkWithCode,
    /// HTTP 200 with an old-API errcode.
    OkWithErrcode,
    /// HTTP 200 with an errcode that is not a number.
    OkWithOddErrcode,
    /// HTTP 200 and a body that never ends, sent as fast as the socket takes it.
    Endless,
}

/// A DingTalk look-alike on loopback whose token call succeeds and whose group send
/// answers as `answer` says; also returns how many body bytes the endless answers handed
/// to the socket.
async fn refusing_api(answer: SendAnswer) -> (String, Arc<AtomicUsize>) {
    use axum::body::{Body, Bytes};
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counter = counter.clone();
        async move {
            let body = match (uri.path(), answer) {
                ("/v1.0/oauth2/accessToken", _) => {
                    Body::from(json!({"accessToken": "tok", "expireIn": 7200}).to_string())
                }
                (_, SendAnswer::OkWithCode) => Body::from(
                    json!({"code": "Forbidden.Gateway", "message": "not sent"}).to_string(),
                ),
                (_, SendAnswer::OkWithErrcode) => {
                    Body::from(json!({"errcode": 40035, "errmsg": "missing"}).to_string())
                }
                (_, SendAnswer::OkWithOddErrcode) => {
                    Body::from(json!({"errcode": "busy", "processQueryKey": "q"}).to_string())
                }
                (_, SendAnswer::Endless) => {
                    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                    let endless = futures_util::stream::repeat_with(move || {
                        counter.fetch_add(chunk.len(), Ordering::Relaxed);
                        Ok::<_, std::io::Error>(chunk.clone())
                    });
                    Body::from_stream(endless)
                }
            };
            (axum::http::StatusCode::OK, body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), served)
}

/// A send that DingTalk (or what stands in front of it) did not take is never counted
/// as sent, even under HTTP 200; and an answer that never ends is given up at the answer
/// cap, not read into memory until the client's timeout.
#[tokio::test]
async fn a_refusal_under_http_200_or_an_endless_answer_is_never_a_send() {
    for answer in [
        SendAnswer::OkWithCode,
        SendAnswer::OkWithErrcode,
        SendAnswer::OkWithOddErrcode,
        SendAnswer::Endless,
    ] {
        let (api, served) = refusing_api(answer).await;
        let (tx, _rx) = mpsc::channel(8);
        let ch = Channel::start_with(config(&api), tx, fast()).await.unwrap();
        let started = std::time::Instant::now();
        let sent = ch.send("ops", "hello", false).await;
        let took = started.elapsed();
        let error = sent.expect_err(&format!("{answer:?} was counted as sent"));
        let text = error.to_string();
        let expected = match answer {
            SendAnswer::OkWithCode => "HTTP 200 Forbidden.Gateway: not sent",
            SendAnswer::OkWithErrcode => "errcode 40035: missing",
            SendAnswer::OkWithOddErrcode => "errcode is not a number",
            SendAnswer::Endless => "answer longer than 1048576 bytes",
        };
        assert!(text.contains(expected), "{answer:?}: {text}");
        let report = ch.report();
        assert_eq!(report.messages_out, 0, "{answer:?}");
        if let SendAnswer::Endless = answer {
            assert!(took < Duration::from_secs(10), "{answer:?} took {took:?}");
            let served = served.load(Ordering::Relaxed);
            assert!(served < 32 << 20, "{answer:?}: {served} bytes served");
        }
        ch.shutdown().await;
    }
}

/// A server that asks for a new connection again and again, right after each one opens,
/// is not followed at its own rate: from the second quick `disconnect` in a row, the next
/// connection waits the reconnect backoff. Messages still get through meanwhile.
#[tokio::test]
async fn a_server_asking_to_reconnect_at_once_again_and_again_is_not_followed_at_its_rate() {
    let opts = SimOptions {
        disconnect_every_ms: Some(20),
        disconnect_grace_ms: 200,
        ..SimOptions::default()
    };
    let mut r = rig_with(opts, |_| {}).await;
    r.wait_connected(1).await;
    let storm = Duration::from_secs(3);
    tokio::time::sleep(storm).await;
    r.inject(json!({"text": "through the storm"})).await;
    assert_eq!(
        r.next().await.content,
        InboundContent::Text("through the storm".into())
    );
    let opened = r
        .client
        .get("/_sim/connections")
        .await
        .expect("connections")["tickets_issued"]
        .as_u64()
        .unwrap_or(u64::MAX);
    // Backoff 100 ms doubling to 500 ms (fast tuning) after the first quick disconnect:
    // about 10 connections in 3 s; followed at the server's rate, one every ~25 ms.
    assert!(opened <= 25, "{opened} connections opened in {storm:?}");
    assert!(opened >= 3, "the client stopped reconnecting: {opened}");
}

/// A robot message frame for the raw stream stand-in below.
fn pushed_robot_frame(msg_id: &str) -> String {
    let data = json!({"msgId": msg_id, "conversationId": "cidAfter==", "conversationType": "1",
        "senderId": "$:u", "senderStaffId": "0423001", "senderNick": "Li Lei", "msgtype": "text",
        "text": {"content": msg_id}});
    json!({"specVersion": "1.0", "type": "CALLBACK",
        "headers": {"topic": "/v1.0/im/bot/messages/get", "messageId": format!("f-{msg_id}"),
                    "contentType": "application/json"},
        "data": data.to_string()})
    .to_string()
}

/// A Stream gateway stand-in on loopback whose first connection gets a `disconnect`
/// followed at once by `after` robot messages, written together; later connections stay
/// open and quiet. Returns its base URL and the `messageId`s ACKed on any connection.
async fn disconnecting_gateway(after: usize) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let ws_url = base.replace("http://", "ws://") + "/connect";
    let acks = acked.clone();
    let app = axum::Router::new()
        .route(
            "/v1.0/gateway/connections/open",
            axum::routing::post(move || {
                let ws_url = ws_url.clone();
                async move { axum::Json(json!({"endpoint": ws_url, "ticket": "t"})) }
            }),
        )
        .route(
            "/connect",
            axum::routing::get(move |upgrade: WebSocketUpgrade| {
                let (acks, first) = (acks.clone(), connections.fetch_add(1, Ordering::SeqCst) == 0);
                async move {
                    upgrade.on_upgrade(move |ws| async move {
                        let (mut tx, mut rx) = ws.split();
                        if first {
                            let disconnect = json!({"specVersion": "1.0", "type": "SYSTEM",
                                "headers": {"topic": "disconnect", "contentType": "application/json"},
                                "data": "{\"reason\":\"connection is expired\"}"});
                            let _ = tx.feed(Message::text(disconnect.to_string())).await;
                            for i in 0..after {
                                let frame = pushed_robot_frame(&format!("after{i}"));
                                let _ = tx.feed(Message::text(frame)).await;
                            }
                            let _ = tx.flush().await;
                        }
                        while let Some(Ok(Message::Text(t))) = rx.next().await {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                            if let Some(id) = v["headers"]["messageId"].as_str() {
                                acks.lock().unwrap().push(id.to_string());
                            }
                        }
                    })
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, acked)
}

/// Messages DingTalk had already sent on a connection when it asked for a new one are not
/// lost with it (a bot message is not delivered again): the old connection is still read,
/// and each is handed over and ACKed once.
#[tokio::test]
async fn messages_on_their_way_on_a_connection_asked_to_go_are_taken_and_acked() {
    let (base, acked) = disconnecting_gateway(5).await;
    let (tx, mut rx) = mpsc::channel(16);
    let ch = Channel::start_with(config(&base), tx, fast())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(m)) => got.push(m.msg_id),
            _ => break,
        }
    }
    got.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("after{i}")).collect();
    assert_eq!(got, expected, "messages handed over");
    let mut acks = Vec::new();
    for _ in 0..100 {
        acks = acked.lock().unwrap().clone();
        if acks.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acks.sort();
    let frames: Vec<String> = expected.iter().map(|id| format!("f-{id}")).collect();
    assert_eq!(acks, frames, "each ACKed once");
    ch.shutdown().await;
}
