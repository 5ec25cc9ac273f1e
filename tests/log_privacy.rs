//! `logging.level` applies to clawdbot's own targets only: at `trace` the log is verbose,
//! yet no dependency logs a WebSocket frame or an HTTP body, so message text, the session
//! webhook URL and secrets never reach a log file.

mod support;

use std::time::Duration;

use clawdbot::model::demo::FakeConfig;
use serde_json::json;
use support::stack::{Stack, CLIENT_SECRET};

#[test]
fn at_trace_level_no_message_text_or_webhook_url_reaches_the_log() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "logging:\n  level: trace\n");
    stack.start_bot(&cfg);
    let canary = "CANARY-trace-8812 quarterly numbers";
    let injected = stack.inject(json!({"text": canary, "conversation_type": "group",
        "conversation_id": "cidTrace==", "sender_staff_id": "0423001"}));
    let webhook = injected["payload"]["sessionWebhook"]
        .as_str()
        .expect("the simulator hands out a session webhook")
        .to_string();
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert!(out[0]["text"].as_str().unwrap().contains(canary), "{out:?}");
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let logs = stack.home.all_logs();
    assert!(
        logs.contains(" DEBUG ") || logs.contains(" TRACE "),
        "the configured level does not apply to clawdbot's own targets:\n{logs}"
    );
    let token = webhook.rsplit("session=").next().unwrap_or(&webhook);
    for (what, secret) in [
        ("message text", "CANARY-trace-8812"),
        ("session webhook URL", webhook.as_str()),
        ("session webhook token", token),
        ("client secret", CLIENT_SECRET),
    ] {
        assert!(!logs.contains(secret), "{what} in the log:\n{logs}");
    }
}
