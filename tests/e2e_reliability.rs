//! Faults end to end: a SIGKILLed daemon with turns in flight, a restarted simulator,
//! config reloads (good and bad), a config with secrets readable by others.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use clawdbot::model::demo::{FakeBehavior, FakeConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::stack::Stack;
use support::wait_until;

fn slow_model(ms: u64) -> FakeConfig {
    FakeConfig::from(FakeBehavior {
        latency_ms: ms,
        ..Default::default()
    })
}

fn replies_by_conversation(outbox: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in outbox {
        *counts
            .entry(
                e["conversation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn sigkill_with_turns_in_flight_loses_nothing_and_answers_once_after_restart() {
    let stack = Stack::new(slow_model(2000), &[]);
    let cfg = stack.config(4, 10_000, "");
    stack.start_bot(&cfg);
    for i in 0..3 {
        stack.inject_group(&format!("cidKill{i}=="), &format!("question {i}"));
    }
    assert!(
        wait_until(Duration::from_secs(10), || stack.fake_stats().in_flight
            >= 3),
        "turns never reached the model"
    );
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    assert!(stack.outbox().is_empty(), "answered before the kill");

    stack.start_bot(&cfg);
    let out = stack.wait_outbox(3, Duration::from_secs(20));
    // Give a duplicate the chance to show up before counting.
    std::thread::sleep(Duration::from_millis(500));
    let counts = replies_by_conversation(&stack.outbox());
    for i in 0..3 {
        assert_eq!(counts.get(&format!("cidKill{i}==")), Some(&1), "{out:?}");
    }
    assert!(
        out.iter()
            .all(|e| e["text"].as_str().unwrap().starts_with("echo: question")),
        "{out:?}"
    );
}

#[test]
fn after_a_restart_an_expired_session_gets_a_sorry_through_the_openapi() {
    // Session webhooks live 1.5 s here, so the message is stale by the time the bot is back.
    let stack = Stack::new(slow_model(3000), &["--session-ttl-ms", "1500"]);
    let cfg = stack.config(2, 10_000, "");
    stack.start_bot(&cfg);
    let injected = stack.inject(
        serde_json::json!({"text": "will you remember me?", "conversation_type": "group",
        "conversation_id": "cidLate==", "sender_staff_id": "0423001"}),
    );
    let expires = injected["payload"]["sessionWebhookExpiredTime"]
        .as_u64()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || stack
        .fake_stats()
        .in_flight
        >= 1));
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    assert!(wait_until(
        Duration::from_secs(5),
        || clawdbot::dingtalk::now_ms() > expires
    ));

    stack.start_bot(&cfg);
    let out = stack.wait_outbox(1, Duration::from_secs(15));
    assert_eq!(out[0]["route"], "group_send", "{out:?}");
    assert!(
        out[0]["text"].as_str().unwrap().contains("restarted"),
        "{out:?}"
    );
}

#[test]
fn the_bot_reconnects_after_the_simulator_restarts() {
    let mut stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    stack.restart_sim();
    stack.wait_connected();
    stack.inject_group("cidAfter==", "still there?");
    let out = stack.wait_outbox(1, Duration::from_secs(15));
    assert!(out[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("echo: still there?"));
    assert!(stack.status()["channel"]["reconnects"].as_u64().unwrap() >= 1);
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "policy:\n  system_prompt: \"PROMPT-ONE\"\n");
    stack.start_bot(&cfg);
    let original = std::fs::read_to_string(&cfg).unwrap();
    let pid = Pid::from_raw(stack.bot_pid());
    let log = stack.home.log_path("bot");

    std::fs::write(&cfg, original.replace("PROMPT-ONE", "PROMPT-TWO")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("config reloaded")
    }));
    stack.inject_group("cidHup==", "which prompt?");
    stack.wait_outbox(1, Duration::from_secs(10));
    let last = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(last["messages"][0]["content"], "PROMPT-TWO");

    std::fs::write(
        &cfg,
        original
            .replace("PROMPT-ONE", "PROMPT-THREE")
            .replace("timeout_ms", "timeout_msec"),
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("config reload failed, keeping the old config")
            && text.contains("timeout_msec")
    }));
    stack.inject_group("cidHup==", "and now?");
    stack.wait_outbox(2, Duration::from_secs(10));
    let last = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(
        last["messages"][0]["content"], "PROMPT-TWO",
        "bad config was applied"
    );
    assert_eq!(
        stack.home.run(&["daemon", "status", "--name", "bot"]).code,
        0
    );
    let st = stack.status();
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("reload"),
        "{st}"
    );

    // A later good reload clears the reload error from last_error.
    std::fs::write(&cfg, original.replace("PROMPT-ONE", "PROMPT-FOUR")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("config reloaded")
            .count()
            == 2
    }));
    let st = stack.status();
    assert!(st["last_error"].is_null(), "stale reload error: {st}");
}

#[test]
fn secrets_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = stack
        .home
        .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("readable by others") && r.stderr.contains("chmod 600"),
        "{r:?}"
    );
    stack.start_bot(&cfg);
    assert!(std::fs::read_to_string(stack.home.log_path("bot"))
        .unwrap()
        .contains("readable by others"));

    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = stack
        .home
        .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert!(!r.stderr.contains("readable by others"), "{r:?}");
}

#[test]
fn a_failed_reload_names_the_key_and_line_never_the_secret() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let log = stack.home.log_path("bot");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let bad = good.replace(
        &format!("client_secret: \"{}\"", support::stack::CLIENT_SECRET),
        "client_secret: \"SECRETzz9${Qx7\"",
    );
    assert_ne!(bad, good);
    std::fs::write(&cfg, bad).unwrap();
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || log_text()
        .contains("config reload failed")));
    let st = stack.status();
    let last = st["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("channel.dingtalk.client_secret") && last.contains("line 17"),
        "{st}"
    );
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    for shown in [log_text(), st.to_string(), human.stdout] {
        assert!(
            !shown.contains("SECRETzz9") && !shown.contains("Qx7"),
            "secret shown: {shown}"
        );
    }
}

/// Retries of undelivered replies, fast enough for a test.
const QUICK_REDELIVERY: &str = "reply:\n  redelivery_delay_ms: 100\n  redelivery_attempts: 2\n";

fn faults(stack: &Stack, f: Value) {
    stack.rt.block_on(stack.sim.faults(f)).expect("faults set");
}

fn texts_and_routes(out: &[Value]) -> Vec<(String, String)> {
    out.iter()
        .map(|e| {
            (
                e["route"].as_str().unwrap_or_default().to_string(),
                // Markdown replies in groups end with the asker's @mention.
                e["text"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches("\n\n@0423001")
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until the status shows `key` under `delivery` at `want`.
fn wait_delivery(stack: &Stack, key: &str, want: u64) -> Value {
    let mut last = Value::Null;
    let seen = wait_until(Duration::from_secs(15), || {
        last = stack.status();
        last["delivery"][key].as_u64() == Some(want)
    });
    assert!(seen, "delivery.{key} never reached {want}: {last}");
    last
}

#[test]
fn a_reply_the_session_webhook_refuses_twice_goes_out_through_the_openapi_in_the_same_turn() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    faults(&stack, serde_json::json!({"webhook_busy": 2}));
    stack.inject_group("cidBusy==", "are you there?");
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(
        texts_and_routes(&out),
        [("group_send".into(), "echo: are you there?".into())]
    );
    let st = stack.status();
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    assert_eq!(st["delivery"]["replies_redelivered"], 0, "{st}");
}

#[test]
fn a_reply_no_route_takes_is_retried_by_the_running_daemon_and_sent_once() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, QUICK_REDELIVERY);
    stack.start_bot(&cfg);
    // The turn's own try: the webhook is busy twice, then the OpenAPI times out twice.
    faults(
        &stack,
        serde_json::json!({"webhook_busy": 2, "gateway_504": 2}),
    );
    stack.inject_group("cidRetry==", "deliver me");
    let st = wait_delivery(&stack, "replies_redelivered", 1);
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    assert_eq!(
        texts_and_routes(&stack.outbox()),
        [("session_webhook".into(), "echo: deliver me".into())]
    );
    let log = std::fs::read_to_string(stack.home.log_path("bot")).unwrap();
    assert!(log.contains("reply delivered on retry"), "{log}");
    assert!(!log.contains("deliver me"), "message text logged");
    // Completed: a restart answers nothing again.
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    stack.inject_group("cidRetry==", "after restart");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(texts_and_routes(&out)[1].1, "echo: after restart");
}

#[test]
fn after_every_retry_failed_the_user_is_told_sorry_and_the_message_is_completed() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, QUICK_REDELIVERY);
    stack.start_bot(&cfg);
    // Each try: the webhook says "session gone", the OpenAPI refuses the token twice.
    // The turn's try and both retries fail; the sorry then goes through the webhook.
    faults(
        &stack,
        serde_json::json!({"session_300001": 3, "invalid_auth": 6}),
    );
    let msg_id = stack.inject_group("cidSorry==", "answer me");
    let st = wait_delivery(&stack, "replies_given_up", 1);
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    let out = stack.outbox();
    assert_eq!(
        texts_and_routes(&out),
        [(
            "session_webhook".into(),
            "Sorry, I could not deliver my answer to your last message. Please ask again.".into()
        )]
    );
    let log = std::fs::read_to_string(stack.home.log_path("bot")).unwrap();
    assert!(
        log.contains(&msg_id) && log.contains("undelivered notice was sent instead"),
        "{log}"
    );
    // Completed: the restarted daemon does not answer it again.
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    stack.inject_group("cidSorry==", "next");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(texts_and_routes(&out)[1].1, "echo: next");
}

#[test]
fn when_even_the_sorry_fails_the_message_is_answered_by_the_next_start() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2,
        5000,
        "reply:\n  redelivery_delay_ms: 100\n  redelivery_attempts: 1\n",
    );
    stack.start_bot(&cfg);
    // The turn's try, one answer retry and two sorry tries: four failures on both routes.
    faults(
        &stack,
        serde_json::json!({"session_300001": 4, "invalid_auth": 8}),
    );
    let msg_id = stack.inject_group("cidPending==", "keep me");
    let st = wait_delivery(&stack, "replies_left_pending", 1);
    assert_eq!(st["delivery"]["replies_given_up"], 0, "{st}");
    assert!(stack.outbox().is_empty());
    let log = std::fs::read_to_string(stack.home.log_path("bot")).unwrap();
    let error_line = log
        .lines()
        .find(|l| l.contains("stays in the inbox for the next start"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        error_line.contains("ERROR") && error_line.contains(&msg_id),
        "{error_line}"
    );
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    // A later message of the same conversation is answered after the replayed one, so
    // once it is in, a second answer to the replayed message would be too.
    stack.inject_group("cidPending==", "and then");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(
        texts_and_routes(&out),
        [
            ("session_webhook".into(), "echo: keep me".into()),
            ("session_webhook".into(), "echo: and then".into())
        ],
    );
}

/// The simulator's cards, oldest first.
fn cards(stack: &Stack) -> Vec<Value> {
    let v = stack
        .rt
        .block_on(stack.sim.get("/_sim/cards"))
        .expect("cards");
    let mut cards: Vec<Value> = v["cards"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    cards.sort_by_key(|c| c["created_at_ms"].as_u64());
    cards
}

fn last_flow(card: &Value) -> &str {
    card["flow_history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[test]
fn an_ai_card_left_typing_by_kill_9_is_failed_on_restart_and_the_message_answered_once() {
    let answer = "a slow streamed answer, two characters at a time";
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            chunk_interval_ms: 100,
            chunk_chars: 2,
            reply: Some(answer.into()),
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.config(2, 20_000, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    targets:",
        "    card_template_id: \"382e4302-551d-4880-bf29-a30acfab2e71.schema\"\n    targets:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidCardKill==", "stream slowly");
    // Kill while the card is typing (flowStatus 2) with part of the answer shown.
    assert!(
        wait_until(Duration::from_secs(10), || cards(&stack)
            .first()
            .is_some_and(
                |c| last_flow(c) == "2" && c["stream_updates"].as_u64() >= Some(1)
            )),
        "the card never started streaming: {:?}",
        cards(&stack)
    );
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    let typing = cards(&stack)[0].clone();
    assert_eq!(last_flow(&typing), "2", "{typing}");

    stack.start_bot(&cfg);
    let mut seen = Vec::new();
    let done = wait_until(Duration::from_secs(20), || {
        seen = cards(&stack);
        seen.len() == 2 && last_flow(&seen[0]) == "5" && last_flow(&seen[1]) == "3"
    });
    assert!(done, "old card not failed or no new answer: {seen:?}");
    let (old, new) = (&seen[0], &seen[1]);
    assert_eq!(old["outTrackId"], typing["outTrackId"]);
    assert!(
        old["params"]["msgContent"]
            .as_str()
            .unwrap_or_default()
            .contains("restarted"),
        "{old}"
    );
    assert_eq!(new["params"]["msgContent"], answer, "{new}");
    // Exactly once: one card carries the answer, and no text reply was sent besides.
    assert!(stack.outbox().is_empty(), "{:?}", stack.outbox());
    let st = stack.status();
    assert_eq!(st["delivery"]["cards_closed_after_restart"], 1, "{st}");
    // Nothing left recorded as open once both cards are final.
    let open_dir = stack.home.path().join("state/bot/open-cards");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_dir(&open_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(false)),
        "open-card records left behind"
    );
}

#[test]
fn an_ai_card_dingtalk_will_not_finalize_falls_back_to_one_text_reply_and_is_closed_later() {
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            first_token_ms: 1500,
            chunk_chars: 100,
            reply: Some("the answer".into()),
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.config(2, 20_000, QUICK_REDELIVERY);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    targets:",
        "    card_template_id: \"382e4302-551d-4880-bf29-a30acfab2e71.schema\"\n    targets:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidCardDown==", "card please");
    assert!(
        wait_until(Duration::from_secs(10), || !cards(&stack).is_empty()),
        "no card opened"
    );
    // Eight card calls time out from now on (504 and its one retry = two each): the one
    // streaming update takes at most four, so finishing the card fails.
    faults(&stack, serde_json::json!({"gateway_504": 8}));
    let out = stack.wait_outbox(1, Duration::from_secs(20));
    assert_eq!(
        texts_and_routes(&out),
        [("session_webhook".into(), "the answer".into())]
    );
    // Recorded as open until a later try fails it; then the record goes.
    let card_id = cards(&stack)[0]["outTrackId"].as_str().unwrap().to_string();
    let record = stack
        .home
        .path()
        .join("state/bot/open-cards")
        .join(format!("{card_id}.json"));
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = cards(&stack);
            last_flow(&seen[0]) == "5" && !record.exists()
        }),
        "card never closed: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(stack.outbox().len(), 1, "answered twice");
}
