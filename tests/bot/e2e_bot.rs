//! The bot end to end: simulator -> daemon -> fake model -> reply in the simulator's
//! outbox. Limits, fairness, timeouts and fallback text, memory, access, privacy.

use crate::support;

use std::time::{Duration, Instant};

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig, FakeMode};
use serde_json::{json, Value};
use support::config::{DingTalkSpec, ModelSpec, TestConfig};
use support::stack::{Stack, CLIENT_ID, CLIENT_SECRET};
use support::wait_until;

fn echo_with_latency(ms: u64) -> FakeConfig {
    FakeConfig::from(FakeBehavior {
        latency_ms: ms,
        ..Default::default()
    })
}

#[test]
fn a_group_message_is_answered_and_its_text_never_logged() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let canary = "CANARY-e2e-5521 secret plans";
    stack.inject_group("cidPrivacy==", canary);
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(out[0]["route"], "session_webhook");
    assert!(
        out[0]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("echo: {canary}")),
        "{}",
        out[0]
    );
    assert_eq!(
        out[0]["at_user_ids"][0], "0423001",
        "the asker is @-mentioned in groups"
    );
    // The model got the policy prompt first, then the message.
    let seen = stack.fake.state.stats().recent;
    let messages = seen.back().unwrap().body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages.last().unwrap()["content"], canary);

    let status = stack
        .home
        .run(&["--json", "daemon", "status", "--name", "bot"]);
    let health = stack.home.run(&["--json", "healthcheck", "--name", "bot"]);
    assert_eq!(health.code, 0, "{health:?}");
    for (what, text) in [
        ("log", stack.home.all_logs()),
        ("status", status.stdout),
        ("healthcheck", health.stdout),
    ] {
        assert!(
            !text.contains("CANARY-e2e-5521"),
            "message text leaked into {what}"
        );
        assert!(
            !text.contains("stack-secret"),
            "client secret leaked into {what}"
        );
        assert!(
            !text.contains("test-key"),
            "model api key leaked into {what}"
        );
    }
    let st = stack.status();
    assert_eq!(st["channel"]["messages_in"], 1);
    assert_eq!(st["models"][0]["served"], 1);
}

/// Fairness is judged by order, not by a stopwatch: once the daemon has taken the quiet
/// group's message in, at most a few busy replies (the 2 running, the one waiting before
/// it, and one that may finish alongside) can reach the outbox before the quiet reply.
#[test]
fn a_flooding_group_never_exceeds_the_limit_nor_starves_a_quiet_group() {
    let stack = Stack::new(echo_with_latency(500), &[]);
    let cfg = stack.config(2, 60_000, "access:\n  user_rate_limit: 0\n");
    stack.start_bot(&cfg);
    // Three busy groups flood 8 messages each; then one quiet group asks once.
    for i in 0..8 {
        for g in 0..3 {
            stack.inject_group(&format!("cidBusy{g}=="), &format!("flood {g}/{i}"));
        }
    }
    stack.inject_group("cidQuiet==", "quiet question");
    assert!(
        wait_until(Duration::from_secs(30), || stack.status()["channel"]
            ["messages_in"]
            == 25),
        "the daemon never took all 25 messages in"
    );
    // No fewer busy replies than this were sent before the quiet message came in.
    let answered_before = stack.outbox().len();
    // Everything gets exactly one reply, and the model never saw more than 2 at once.
    let all = stack.wait_outbox(25, Duration::from_secs(60));
    let quiet_at = all
        .iter()
        .position(|e| e["conversation_id"] == "cidQuiet==")
        .expect("the quiet group was answered");
    assert!(
        quiet_at <= answered_before + 6 && quiet_at < 24,
        "quiet reply is number {quiet_at} ({answered_before} sent before it came in)"
    );
    assert_eq!(all.len(), 25);
    assert!(
        stack.fake_stats().max_in_flight <= 2,
        "{:?}",
        stack.fake_stats()
    );
    let st = stack.status();
    assert!(st["models"][0]["peak_in_flight"].as_u64().unwrap() <= 2);
    assert_eq!(st["models"][0]["limit"], 2);
}

#[test]
fn a_stalled_model_gets_the_fallback_reply_within_timeout_ms() {
    let fake = FakeConfig::from(FakeBehavior {
        mode: FakeMode::StallBeforeHeaders,
        ..Default::default()
    });
    let stack = Stack::new(fake, &[]);
    let cfg = stack.config(
        2,
        1500,
        "reply:\n  fallback_text: \"Sorry: the model is slow (fallback).\"\n",
    );
    stack.start_bot(&cfg);
    let t = Instant::now();
    stack.inject_group("cidStall==", "are you there?");
    // The model never answers: only the 1.5 s budget can end the turn (a timer never fires
    // early), and the reply arrives (the wait is generous for a loaded machine).
    let out = stack.wait_outbox(1, Duration::from_secs(30));
    let waited = t.elapsed();
    assert_eq!(
        out[0]["text"].as_str().unwrap().lines().next().unwrap(),
        "Sorry: the model is slow (fallback)."
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "fallback after {waited:?}"
    );
    assert_eq!(stack.status()["models"][0]["timeouts"], 1);
}

#[test]
fn model_down_errors_and_broken_streams_all_get_the_fallback_text() {
    for mode in [
        FakeMode::Status,
        FakeMode::DieMidStream,
        FakeMode::Empty200,
        FakeMode::ErrorInStream,
    ] {
        let fake = FakeConfig::from(FakeBehavior {
            mode,
            status: 503,
            ..Default::default()
        });
        let stack = Stack::new(fake, &[]);
        let cfg = stack.config(1, 3000, "reply:\n  fallback_text: \"FALLBACK\"\n");
        stack.start_bot(&cfg);
        stack.inject_group("cidDown==", "hello");
        let out = stack.wait_outbox(1, Duration::from_secs(10));
        assert!(
            out[0]["text"].as_str().unwrap().starts_with("FALLBACK"),
            "{mode:?}: {}",
            out[0]
        );
    }
}

#[test]
fn memory_carries_the_previous_answer_and_reset_forgets_it() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    stack.inject_group("cidMem==", "first question");
    stack.inject_group("cidMem==", "second question");
    stack.wait_outbox(2, Duration::from_secs(10));
    let req = stack.fake_stats().recent.back().unwrap().body.clone();
    let contents: Vec<String> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        contents.len(),
        4,
        "system, first, its answer, second: {contents:?}"
    );
    assert_eq!(contents[1], "first question");
    assert_eq!(contents[2], "echo: first question");

    stack.inject_group("cidMem==", "/reset");
    stack.wait_outbox(3, Duration::from_secs(10));
    assert!(stack.outbox()[2]["text"]
        .as_str()
        .unwrap()
        .contains("forgot"));
    stack.inject_group("cidMem==", "third question");
    stack.wait_outbox(4, Duration::from_secs(10));
    let req = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(
        req["messages"].as_array().unwrap().len(),
        2,
        "memory not reset: {req}"
    );
}

#[test]
fn back_to_back_messages_of_one_conversation_are_answered_in_order() {
    // Eight messages arrive at once; with 4 model slots they could race each other to the
    // model. Each must be answered in arrival order, seeing the answers before it.
    let stack = Stack::new(echo_with_latency(30), &[]);
    let cfg = stack.config(
        4,
        10_000,
        "access:\n  user_rate_limit: 0\nmemory:\n  max_turns: 20\n",
    );
    stack.start_bot(&cfg);
    for i in 0..8 {
        stack.inject_group("cidOrder==", &format!("q{i}"));
    }
    stack.wait_outbox(8, Duration::from_secs(20));
    let replies: Vec<String> = stack
        .replies_in("cidOrder==")
        .iter()
        .map(|r| {
            r["text"]
                .as_str()
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (0..8).map(|i| format!("echo: q{i}")).collect();
    assert_eq!(replies, expected);
    let last = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(
        last["messages"].as_array().unwrap().len(),
        1 + 2 * 7 + 1,
        "the last turn sees all seven earlier exchanges: {last}"
    );
}

#[test]
fn overlong_prompts_are_trimmed_to_the_budget() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "prompt:\n  max_chars: 800\n");
    stack.start_bot(&cfg);
    let long = "x".repeat(5000);
    stack.inject_group("cidLong==", &long);
    stack.wait_outbox(1, Duration::from_secs(10));
    let req = stack.fake_stats().recent.back().unwrap().body.clone();
    let total: usize = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().chars().count())
        .sum();
    assert!(total <= 800, "prompt of {total} chars reached the model");
}

/// The stream client reads in small buffers (8 KiB, issue 12); a frame many times that
/// size, of multi-byte text, still arrives whole and unchanged.
#[test]
fn a_message_far_larger_than_the_read_buffer_arrives_whole() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "prompt:\n  max_chars: 100000\n");
    stack.start_bot(&cfg);
    let long: String = "长消息 line 😀\n".chars().cycle().take(60_000).collect();
    stack.inject_group("cidHuge==", &long);
    stack.wait_outbox(1, Duration::from_secs(10));
    let req = stack.fake_stats().recent.back().unwrap().body.clone();
    let user = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        user.len() > 100_000 && user.contains(&long),
        "the model saw {} bytes, not the whole message",
        user.len()
    );
}

#[test]
fn unsupported_types_denied_users_and_rate_limits_get_clear_replies() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2,
        5000,
        "access:\n  direct: allowlist\n  allow_users: [\"0423001\"]\n  user_rate_limit: 2\n  user_rate_window_secs: 60\n",
    );
    stack.start_bot(&cfg);
    stack.inject(json!({"msgtype": "picture", "conversation_type": "group", "conversation_id": "cidPic==", "sender_staff_id": "0423001"}));
    stack.wait_outbox(1, Duration::from_secs(10));
    assert!(stack.replies_in("cidPic==")[0]["text"]
        .as_str()
        .unwrap()
        .contains("only read text"));

    stack
        .inject(json!({"text": "hi", "conversation_type": "direct", "sender_staff_id": "0999999"}));
    stack.wait_outbox(2, Duration::from_secs(10));
    assert!(
        stack.outbox()[1]["text"]
            .as_str()
            .unwrap()
            .contains("not enabled for you"),
        "{:?}",
        stack.outbox()[1]
    );

    for i in 0..3 {
        stack.inject_group("cidRate==", &format!("q{i}"));
    }
    stack.wait_outbox(5, Duration::from_secs(10));
    let texts: Vec<String> = stack
        .replies_in("cidRate==")
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("faster than I can answer"))
            .count(),
        1,
        "{texts:?}"
    );
}

#[test]
fn a_slow_model_triggers_the_thinking_notice_then_the_answer() {
    let stack = Stack::new(echo_with_latency(1200), &[]);
    let cfg = stack.config(
        2,
        8000,
        "reply:\n  thinking_notice_ms: 300\n  thinking_text: \"Thinking hard...\"\n",
    );
    stack.start_bot(&cfg);
    stack.inject_group("cidSlow==", "slow one");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(out[0]["text"], "Thinking hard...");
    assert!(out[1]["text"]
        .as_str()
        .unwrap()
        .starts_with("echo: slow one"));
}

#[test]
fn answers_stream_into_an_ai_card_that_is_always_finalized() {
    let fake = FakeConfig::from(FakeBehavior {
        chunk_interval_ms: 60,
        chunk_chars: 4,
        reply: Some("a streamed answer of several chunks".into()),
        ..Default::default()
    });
    let stack = Stack::new(fake, &[]);
    let cfg_path = stack.config(2, 8000, "");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace(
        "    targets:",
        "    card_template_id: \"382e4302-551d-4880-bf29-a30acfab2e71.schema\"\n    targets:",
    );
    std::fs::write(&cfg_path, text).unwrap();
    stack.start_bot(&cfg_path);
    stack.inject_group("cidCard==", "stream please");
    let sim = stack.sim.clone();
    let cards = stack
        .rt
        .block_on(sim.wait_for("/_sim/cards", Duration::from_secs(10), |v| {
            v.to_string()
                .contains("a streamed answer of several chunks")
                && v.to_string().contains("\"3\"")
        }))
        .expect("card finished");
    assert!(cards.to_string().contains("a streamed answer"), "{cards}");

    // A failing model leaves the card in FAILED, never "typing".
    stack.fake.state.set_config(FakeConfig::from(FakeBehavior {
        mode: FakeMode::Status,
        status: 503,
        ..Default::default()
    }));
    stack.inject_group("cidCard2==", "this will fail");
    stack
        .rt
        .block_on(sim.wait_for("/_sim/cards", Duration::from_secs(10), |v| {
            v.to_string().contains("\"5\"")
        }))
        .expect("card failed state");
}

#[test]
fn routing_rules_send_matching_conversations_to_another_model() {
    let mut per_model = std::collections::BTreeMap::new();
    per_model.insert(
        "ops-model".to_string(),
        FakeBehavior {
            reply: Some("answer from ops-model".into()),
            ..Default::default()
        },
    );
    per_model.insert(
        "dm-model".to_string(),
        FakeBehavior {
            reply: Some("answer from dm-model".into()),
            ..Default::default()
        },
    );
    let stack = Stack::new(
        FakeConfig {
            per_model,
            ..Default::default()
        },
        &[],
    );
    let base = stack.fake.base_url.clone();
    let path = stack.write_config(
        &stack
            .bot_config(2, 5000)
            .model(ModelSpec::new("ops", &base).served_as("ops-model"))
            .model(ModelSpec::new("dm", &base).served_as("dm-model"))
            .rule("conversation_id", "cidOps==", "ops")
            .rule("conversation_type", "direct", "dm"),
    );
    stack.start_bot(&path);
    stack.inject_group("cidOps==", "deploy status?");
    stack.inject_group("cidOther==", "lunch?");
    stack.inject(json!({"text": "hi in private", "conversation_type": "direct", "sender_staff_id": "0423001"}));
    stack.wait_outbox(3, Duration::from_secs(10));
    assert!(stack.replies_in("cidOps==")[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("answer from ops-model"));
    assert!(stack.replies_in("cidOther==")[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("echo: lunch?"));
    assert!(
        stack.outbox().iter().any(|e| e["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("answer from dm-model")),
        "{:?}",
        stack.outbox()
    );
    let models: Vec<String> = stack.status()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models, vec!["dm", "local_chat", "ops"]);
}

/// Issue 10 item 6, end to end through the real daemon: a hostile model (endless
/// always-ready stream, huge stream, trickle, always-ready empty chunks) never floods
/// the chat. Each reply arrives within `timeout_ms` + the delivery margin, is at most
/// `reply.max_parts` messages and `reply.max_answer_chars` characters, and the model's
/// connection is closed once the cap is reached.
#[test]
fn a_hostile_model_never_floods_the_chat() {
    const TIMEOUT_MS: u64 = 3_000;
    const MAX_CHARS: usize = 12_000; // four 3,500-char parts' worth: max_parts cuts it to 2
    const MAX_PARTS: usize = 2;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        4,
        TIMEOUT_MS,
        &format!(
            "reply:\n  fallback_text: \"FALLBACK\"\n  max_answer_chars: {MAX_CHARS}\n  max_parts: {MAX_PARTS}\n"
        ),
    );
    stack.start_bot(&cfg);
    let margin = Duration::from_millis(TIMEOUT_MS)
        + clawdbot::dingtalk::channel::REPLY_DELIVERY_LIMIT
        + Duration::from_secs(20);
    let endless = |chunk_chars, chunk_interval_ms| FakeBehavior {
        mode: FakeMode::Endless,
        chunk_chars,
        chunk_interval_ms,
        ..Default::default()
    };
    let cases = [
        ("always-ready", endless(7, 0), true),
        (
            "huge",
            FakeBehavior {
                chunk_chars: 64,
                reply: Some("word ".repeat(200_000)),
                ..Default::default()
            },
            true,
        ),
        ("trickle", endless(1, 20), false),
        ("empty-chunks", endless(0, 0), false),
    ];
    for (i, (name, behavior, cut)) in cases.into_iter().enumerate() {
        let conversation = format!("cidHostile{i}==");
        stack.fake.state.set_model("local-chat", behavior);
        let t = Instant::now();
        stack.inject_group(&conversation, "tell me everything");
        assert!(
            wait_until(margin, || !stack.replies_in(&conversation).is_empty()),
            "{name}: no reply within timeout_ms + margin"
        );
        assert!(t.elapsed() < margin, "{name}: took {:?}", t.elapsed());
        // A sentinel turn in the same conversation runs after the hostile one finished
        // delivering: everything before its answer is the hostile reply.
        stack
            .fake
            .state
            .set_model("local-chat", FakeBehavior::default());
        stack.inject_group(&conversation, "sentinel");
        assert!(
            wait_until(Duration::from_secs(15), || stack
                .replies_in(&conversation)
                .iter()
                .any(|e| e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("echo: sentinel")))),
            "{name}: sentinel answered"
        );
        let replies = stack.replies_in(&conversation);
        // Markdown replies end with the asker's @mention.
        let hostile: Vec<&str> = replies
            .iter()
            .map(|e| e["text"].as_str().unwrap_or_default())
            .map(|t| t.trim_end_matches("\n\n@0423001"))
            .take_while(|t| !t.starts_with("echo: sentinel"))
            .collect();
        assert!(
            (1..=MAX_PARTS).contains(&hostile.len()),
            "{name}: {} messages",
            hostile.len()
        );
        let chars: usize = hostile.iter().map(|t| t.chars().count()).sum();
        assert!(chars <= MAX_CHARS, "{name}: {chars} chars");
        if cut {
            assert_eq!(hostile.len(), MAX_PARTS, "{name}");
            assert!(
                hostile[MAX_PARTS - 1].ends_with(clawdbot::model::ANSWER_CUT_MARK),
                "{name}"
            );
        } else {
            assert_eq!(hostile, ["FALLBACK"], "{name}: out of time");
        }
        assert!(
            wait_until(Duration::from_secs(30), || stack.fake_stats().in_flight
                == 0),
            "{name}: the model request was closed"
        );
    }
}

/// A model server that answers every request with SSE events of empty content, 200 to a
/// `write`, as fast as loopback takes them, until the client goes (at most `limit`): a
/// body read until the connection closes, as some gateways send it.
fn spawn_bursting_sse_server(limit: Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"}}]}\n\n";
        let burst = std::sync::Arc::new(event.repeat(200));
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            let began = Instant::now();
            let burst = burst.clone();
            std::thread::spawn(move || {
                let mut head = [0u8; 8192];
                let _ = conn.read(&mut head);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                );
                while began.elapsed() < limit && conn.write_all(burst.as_bytes()).is_ok() {}
            });
        }
    });
    url
}

/// One model stream whose events are always ready (bursts of empty chunks as fast as
/// loopback allows, until its 60 s timeout) must not starve the turns of other
/// conversations: they are answered while it still streams, not after it ended (with one
/// async worker they waited for its timeout until the stream reader took part in tokio's
/// cooperative budget).
#[test]
fn an_always_ready_model_stream_does_not_starve_other_conversations() {
    const CALM: usize = 5;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let hog_url = spawn_bursting_sse_server(Duration::from_secs(90));
    let hog = ModelSpec::new("hog_model", &hog_url)
        .served_as("hog")
        .api_key("${LOCAL_MODEL_API_KEY}")
        .timeout_ms(60_000);
    let cfg = stack.write_config(
        &stack
            .bot_config(4, 60_000)
            .model(hog)
            .limit("hog_model", 1)
            .rule("conversation_id", "cidHog==", "hog_model"),
    );
    stack.start_bot(&cfg);
    stack.inject_group("cidHog==", "talk forever");
    // The hog's turn is under way once the bot ACKed it and its model call started: give
    // it a moment of the stream before the others ask.
    std::thread::sleep(Duration::from_millis(500));
    let calm: Vec<String> = (0..CALM).map(|i| format!("cidCalm{i}==")).collect();
    for conversation in &calm {
        stack.inject_group(conversation, "hello");
    }
    assert!(
        wait_until(Duration::from_secs(45), || calm
            .iter()
            .all(|c| !stack.replies_in(c).is_empty())),
        "the other conversations were not answered while the endless stream ran"
    );
    assert!(
        stack.replies_in("cidHog==").is_empty(),
        "the endless stream's turn ended first (its 60 s timeout): the check proves nothing"
    );
}

#[test]
fn chat_commands_are_answered_without_the_model_and_can_be_switched_off() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(3, 5000, "commands:\n  status: true\n  reset: false\n");
    stack.start_bot(&cfg);
    let conv = "cidCommands==";
    for text in ["/help", "@bot /WHOAMI", "/status", "/reset"] {
        stack.inject_group(conv, text);
    }
    let out = stack.wait_outbox(4, Duration::from_secs(10));
    let all: Vec<String> = out
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    // Commands are answered at once, each on its own: found by what they start with.
    let texts: Vec<String> = ["Commands:", "staff id:", "Bot status:", "echo: /reset"]
        .iter()
        .map(|start| {
            all.iter()
                .find(|t| t.starts_with(start))
                .unwrap_or_else(|| panic!("no reply starting {start:?}: {all:?}"))
                .clone()
        })
        .collect();
    // /help lists what is enabled, and not the switched-off /reset.
    assert!(
        texts[0].contains("/whoami") && texts[0].contains("/status"),
        "{texts:?}"
    );
    assert!(
        !texts[0].contains("/reset"),
        "disabled command listed: {texts:?}"
    );
    // /whoami: the asker's staff id and the conversation (ids only).
    assert!(texts[1].contains("0423001"), "{texts:?}");
    assert!(
        texts[1].contains(conv) && texts[1].contains("group"),
        "{texts:?}"
    );
    assert!(!texts[1].contains("Li Lei"), "nick shown: {texts:?}");
    // /status: model name and figures, channel state; no secret, no URL.
    assert!(
        texts[2].contains("local_chat") && texts[2].contains("/ 3 limit"),
        "{texts:?}"
    );
    assert!(texts[2].contains("stream connected"), "{texts:?}");
    for leak in ["stack-secret", "test-key", "http://", "127.0.0.1"] {
        assert!(!texts[2].contains(leak), "{leak} in /status: {texts:?}");
    }
    // A disabled command is ordinary text: the model answers it, and it is the only
    // request the model ever saw.
    assert!(texts[3].starts_with("echo: /reset"), "{texts:?}");
    let seen = stack.fake_stats();
    assert_eq!(seen.requests, 1, "the model was called for a command");
    assert_eq!(
        seen.recent.back().unwrap().body["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"],
        "/reset"
    );
    // Command replies are completed in the journal like any other reply.
    assert!(
        wait_until(Duration::from_secs(30), || stack.status()["journal"]
            ["pending"]
            == 0),
        "{}",
        stack.status()
    );
}

/// `daemon start` of a bot whose config holds `secret`, with extra start flags.
fn start_with_secret(stack: &Stack, secret: &str, mode: &str, flags: &[&str]) -> support::Run {
    let cfg = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("stack-secret", secret)
        .replace("    api_base:", &format!("{mode}    api_base:"));
    std::fs::write(&cfg, text).unwrap();
    let mut args = vec!["daemon", "start", "--name", "bot", "--config"];
    args.push(cfg.to_str().unwrap());
    args.extend_from_slice(flags);
    stack.home.run(&args)
}

#[test]
fn start_with_refused_credentials_exits_1_with_dingtalks_error_and_leaves_nothing() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let port = support::free_port();
    let http_mode = format!("    mode: http\n    http_listen: \"127.0.0.1:{port}\"\n");
    for mode in ["", http_mode.as_str()] {
        let r = start_with_secret(&stack, "WRONG-secret-7731", mode, &[]);
        assert_eq!(r.code, 1, "{mode:?}: {r:?}");
        assert!(
            r.stderr.contains("refused the channel's credentials")
                && r.stderr.contains("invalidClientIdOrSecret"),
            "{mode:?}: DingTalk's answer not shown: {r:?}"
        );
        assert!(
            !r.stderr.contains("WRONG-secret-7731") && !r.stdout.contains("WRONG-secret-7731"),
            "{r:?}"
        );
        // Nothing left behind: no daemon answers, no pid file.
        let st = stack
            .home
            .run(&["--json", "daemon", "status", "--name", "bot"]);
        assert_ne!(st.json()["state"], "running", "{mode:?}: {st:?}");
        assert!(
            !stack.home.state_dir("bot").join("pid").exists(),
            "{mode:?}"
        );
    }
    // --no-wait-channel keeps the old behaviour: started, and status tells the truth.
    let r = start_with_secret(&stack, "WRONG-secret-7731", "", &["--no-wait-channel"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        wait_until(Duration::from_secs(10), || stack.status()["channel"]
            ["auth"]
            == "refused"),
        "{}",
        stack.status()
    );
    stack.home.run(&["daemon", "stop", "--name", "bot"]);
}

#[test]
fn start_with_dingtalk_unreachable_exits_1_naming_the_error_within_the_timeout() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.sim_url, &support::dead_url());
    std::fs::write(&cfg, text).unwrap();
    let began = Instant::now();
    let r = stack.home.run(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--timeout",
        "3",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("did not authenticate within"), "{r:?}");
    assert!(r.stderr.contains("cannot reach DingTalk"), "{r:?}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    assert!(!stack.home.state_dir("bot").join("pid").exists());
}

#[test]
fn a_busy_reply_from_waiting_behind_the_conversation_is_counted() {
    let stack = Stack::new(echo_with_latency(2000), &[]);
    let cfg = stack.config(2, 10_000, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("limits:\n", "limits:\n  queue:\n    max_wait_ms: 300\n");
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidBusy==", "slow first");
    stack.inject_group("cidBusy==", "second, behind the first");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert!(
        out.iter()
            .any(|e| e["text"].as_str().unwrap().starts_with("echo: slow first")),
        "{out:?}"
    );
    let st = stack.status();
    assert_eq!(st["busy_replies"]["behind_conversation"], 1, "{st}");
    assert_eq!(st["busy_replies"]["total"], 1, "{st}");
    assert_eq!(st["busy_replies"]["model_queue"], 0, "{st}");
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    assert!(
        human
            .stdout
            .contains("busy replies: 1 (1 waited behind their conversation"),
        "{human:?}"
    );
}

/// Starts the bot with model limit `limit`, `max_waiting` turns per line (20 s each),
/// `sends_per_conversation` a second and no user rate limit, and waits past its start-up
/// send window, so a busy reply goes out when decided (when the send rate has room).
fn start_with_short_lines(
    stack: &Stack,
    limit: usize,
    max_waiting: usize,
    sends_per_conversation: usize,
) {
    let channel = DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &stack.sim_url).with(&format!(
        "send_rate:\n  per_conversation: {sends_per_conversation}\n"
    ));
    let cfg = stack.write_config(
        &stack
            .bot_config(limit, 30_000)
            .queue(max_waiting, 20_000)
            .dingtalk(channel)
            .section("access:\n  user_rate_limit: 0\n"),
    );
    stack.start_bot(&cfg);
    std::thread::sleep(Duration::from_millis(1100));
}

/// Issue 12: a flood into one conversation waits in a line of at most
/// `limits.queue.max_waiting` turns behind the one being answered; the rest are told busy
/// at once, before the first answer (not after `max_wait_ms`). Every message gets exactly
/// one reply, the line's turns are answered in arrival order, and another conversation
/// is answered meanwhile.
#[test]
fn a_flood_into_one_conversation_waits_in_a_bounded_line() {
    let stack = Stack::new(echo_with_latency(2000), &[]);
    start_with_short_lines(&stack, 2, 2, 20);
    for i in 0..10 {
        stack.inject_group("cidFlood==", &format!("flood {i}"));
        // Taken in before the next is sent, so the daemon sees them in this order.
        assert!(
            wait_until(Duration::from_secs(10), || stack.status()["channel"]
                ["messages_in"]
                == i + 1),
            "message {i} was not taken in"
        );
    }
    stack.inject_group("cidOther==", "another group");
    let all = stack.wait_outbox(11, Duration::from_secs(30));
    let flood: Vec<&str> = all
        .iter()
        .filter(|e| e["conversation_id"] == "cidFlood==")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let busy = "I'm busy answering other questions right now. Please ask again in a minute.";
    assert_eq!(flood.len(), 10, "{flood:?}");
    assert!(
        flood[..7].iter().all(|t| *t == busy),
        "the 7 beyond the line were not told busy before the first answer: {flood:?}"
    );
    for (i, t) in flood[7..].iter().enumerate() {
        assert!(t.starts_with(&format!("echo: flood {i}")), "{flood:?}");
    }
    assert!(
        all.iter().any(|e| e["conversation_id"] == "cidOther=="
            && e["text"]
                .as_str()
                .unwrap()
                .starts_with("echo: another group")),
        "{all:?}"
    );
    let st = stack.status();
    assert_eq!(st["busy_replies"]["line_full"], 7, "{st}");
    assert_eq!(st["busy_replies"]["total"], 7, "{st}");
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    assert!(human.stdout.contains("7 came to a full line"), "{human:?}");
    stack.wait_settled();
    assert_eq!(stack.outbox().len(), 11, "a message got a second reply");
}

/// Issue 12, found by a black-box test: with `max_waiting: 0`, of messages arriving
/// together the first one received is answered and the others are told busy, never an
/// earlier one busy and a later one answered (the turns' tasks took their places
/// themselves, and tokio runs the task spawned last first).
#[test]
fn of_a_burst_into_a_full_line_the_first_received_is_the_one_answered() {
    let stack = Stack::new(echo_with_latency(1500), &[]);
    start_with_short_lines(&stack, 1, 0, 20);
    for round in 0..3 {
        let conversation = format!("cidBurst{round}==");
        let ids: Vec<String> = (0..5)
            .map(|i| stack.inject_group(&conversation, &format!("burst {round}/{i}")))
            .collect();
        let replies = wait_until(Duration::from_secs(20), || {
            stack.replies_in(&conversation).len() == 5
        });
        assert!(
            replies,
            "round {round}: {:?}",
            stack.replies_in(&conversation)
        );
        let log = stack.home.all_logs();
        let first = log
            .lines()
            .filter(|l| l.contains("robot message received"))
            .find_map(|l| ids.iter().find(|id| l.contains(id.as_str())))
            .expect("the burst's arrival in the log");
        let asked = ids.iter().position(|id| id == first).unwrap();
        let answered: Vec<String> = stack
            .replies_in(&conversation)
            .iter()
            .filter_map(|e| e["text"].as_str())
            .filter(|t| t.starts_with("echo: "))
            .map(String::from)
            .collect();
        assert_eq!(answered.len(), 1, "round {round}: {answered:?}");
        assert!(
            answered[0].starts_with(&format!("echo: burst {round}/{asked}")),
            "round {round}: the first received was burst {round}/{asked}, answered {answered:?}"
        );
    }
}

/// Issue 12 (black-box helper): at DingTalk's send rate into one conversation (2 a second
/// here), the busy replies of a full line leave a slot for the answer at the model. A is
/// answered in 300 ms while B and C are told busy: B's busy reply goes at once, C's
/// waits, and A's answer goes out when ready. Before, B's and C's busy replies filled the
/// window at once and A's answer waited for B's to leave it (~1 s), after C's.
#[test]
fn busy_replies_leave_the_send_slot_an_answer_needs() {
    let stack = Stack::new(echo_with_latency(300), &[]);
    start_with_short_lines(&stack, 1, 0, 2);
    let conversation = "cidSlots==";
    for (i, text) in ["question A", "question B", "question C"]
        .iter()
        .enumerate()
    {
        stack.inject_group(conversation, text);
        assert!(
            wait_until(Duration::from_secs(10), || stack.status()["channel"]
                ["messages_in"]
                == i + 1),
            "{text} was not taken in"
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || stack
            .replies_in(conversation)
            .len()
            == 3),
        "{:?}",
        stack.replies_in(conversation)
    );
    let texts = stack.reply_texts_in(conversation);
    let busy = "I'm busy answering other questions right now. Please ask again in a minute.";
    assert!(texts[0] == busy && texts[2] == busy, "{texts:?}");
    assert!(
        texts[1].starts_with("echo: question A"),
        "the answer went out after both busy replies: {texts:?}"
    );
}

/// Issue 12 (black-box helper): a flood into one group at DingTalk's send rate (1 a second
/// here) cannot get a busy reply per message. At most the rate times the delivery limit
/// (10 s) of busy replies wait for a slot; the others are refused at once, not retried, and
/// their messages marked answered without a reply (`busy_replies.not_sent`). Before, each
/// was held and retried for minutes (a 500-message flood still had replies going out
/// 4 minutes later). Every message ends: replied or counted, none left pending.
#[test]
fn a_flood_past_the_send_rate_is_not_told_busy_for_minutes() {
    let stack = Stack::new(echo_with_latency(3000), &[]);
    start_with_short_lines(&stack, 1, 0, 1);
    let conversation = "cidFloodRate==";
    for i in 0..30 {
        stack.inject_group(conversation, &format!("flood {i}"));
    }
    // Those that could not be sent within the limit even with every slot are done at once,
    // not after waiting the whole limit for a slot.
    let refused_at_once = wait_until(Duration::from_secs(5), || {
        stack.status()["busy_replies"]["not_sent"]
            .as_u64()
            .is_some_and(|n| n >= 15)
    });
    assert!(refused_at_once, "{}", stack.status());
    let mut st = Value::Null;
    let settled = wait_until(Duration::from_secs(30), || {
        st = stack.status();
        let replied = stack.replies_in(conversation).len() as u64;
        st["journal"]["pending"] == 0
            && st["busy_replies"]["not_sent"].as_u64().map(|n| n + replied) == Some(30)
    });
    assert!(settled, "{st}");
    let not_sent = st["busy_replies"]["not_sent"].as_u64().unwrap();
    assert!(
        (18..=29).contains(&not_sent),
        "at most ~11 busy replies fit in 10 s at 1 a second: {st}"
    );
    let texts = stack.reply_texts_in(conversation);
    assert!(
        texts.iter().any(|t| t.starts_with("echo: flood 0")),
        "{texts:?}"
    );
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    let human = stack
        .home
        .run(&["daemon", "status", "--name", "bot"])
        .stdout;
    assert!(
        human.contains(&format!("{not_sent} not sent, past DingTalk's send rate")),
        "{human}"
    );
}

/// Issue 12 (black-box finding): a group flooded for longer than `max_wait_ms` keeps
/// getting answers. A turn whose wait in line ran out is told busy, but it leaves the line
/// at once: before, it held its place and its ticket until its busy reply was sent or
/// refused (up to DingTalk's send limit, 10 s), the line stopped at it, every turn behind
/// it ran out of time as well, and the model idled while the group got only busy replies.
#[test]
fn a_group_flooded_past_its_wait_keeps_getting_answers() {
    let stack = Stack::new(echo_with_latency(200), &[]);
    let base = stack
        .bot_config(2, 30_000)
        .section("access:\n  user_rate_limit: 0\n");
    let cfg = stack.write_config(&long_flood_config(&stack, base));
    stack.start_bot(&cfg);
    std::thread::sleep(Duration::from_millis(1100));
    let answers_late = answers_late_in_a_long_flood(&stack, "cidLongFlood==");
    // The send rate (3 a second, answers first) allows ~12 in those 4 s; the model ~20.
    assert!(
        answers_late >= 6,
        "{answers_late} answers in the flood's second half: {}",
        stack.status()
    );
}

/// `base` (a bot config) set up for [`answers_late_in_a_long_flood`]: lines of 20 turns
/// waiting at most 1 s, DingTalk taking 3 sends a second per conversation. The model
/// should take ~200 ms, and `base` have no user rate limit.
pub(crate) fn long_flood_config(stack: &Stack, base: TestConfig) -> TestConfig {
    let channel = DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &stack.sim_url)
        .with("send_rate:\n  per_conversation: 3\n");
    base.queue(20, 1000).dingtalk(channel)
}

/// Floods `conversation` with 12 messages a second for 8 s (bounded in count and time)
/// and returns how many answers (not busy replies) reached it in the flood's second
/// half, long after its line first ran past `max_wait_ms`.
pub(crate) fn answers_late_in_a_long_flood(stack: &Stack, conversation: &str) -> usize {
    let flood = Duration::from_secs(8);
    let started = Instant::now();
    let started_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for i in 0..96u32 {
        let due = started + Duration::from_millis(83) * i;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if started.elapsed() > flood + Duration::from_secs(2) {
            break;
        }
        stack.inject_group(conversation, &format!("flood {i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let second_half_us = started_us + flood.as_micros() as u64 / 2;
    stack
        .replies_in(conversation)
        .iter()
        .filter(|e| e["text"].as_str().is_some_and(|t| t.starts_with("echo: ")))
        .filter(|e| e["at_us"].as_u64().is_some_and(|t| t >= second_half_us))
        .count()
}

/// Issue 12: a turn that got no model slot within `max_wait_ms` lets its conversation's
/// next turn go while its busy reply waits for a send slot. Model limit 1 at 1.5 s, and
/// DingTalk takes 1 send a second: X holds the model; D and C1 get no slot (D's busy reply
/// takes the second's send, so C1's waits behind it and X's answer, until ~3 s). C2,
/// arriving at 1.35 s, is served at once and answered; held behind C1's busy reply, its
/// own wait ran out at 2.35 s and it was told busy too.
#[test]
fn a_turn_told_busy_for_the_model_lets_its_conversation_go_on() {
    let stack = Stack::new(echo_with_latency(1500), &[]);
    let channel = DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &stack.sim_url)
        .with("send_rate:\n  per_robot: 1\n  per_conversation: 1\n");
    let cfg = stack.write_config(
        &stack
            .bot_config(1, 30_000)
            .queue_wait_ms(1000)
            .dingtalk(channel)
            .section("access:\n  user_rate_limit: 0\n"),
    );
    stack.start_bot(&cfg);
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    let at = |ms: u64| {
        std::thread::sleep(
            (started + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
        )
    };
    stack.inject_group("cidHoldsModel==", "x");
    at(50);
    stack.inject_group("cidAlsoBusy==", "d");
    at(150);
    stack.inject_group("cidGoesOn==", "c1");
    at(1350);
    stack.inject_group("cidGoesOn==", "c2");
    let settled = wait_until(Duration::from_secs(20), || stack.outbox().len() >= 4);
    let st = stack.status();
    assert!(settled, "{:?} {st}", stack.outbox());
    let texts = stack.reply_texts_in("cidGoesOn==");
    // C2's answer goes first: answers take the send slots before busy replies.
    assert!(
        texts.len() == 2 && texts[0].starts_with("echo: c2") && texts[1].starts_with("I'm busy"),
        "the turn behind a busy one was not answered: {texts:?} {st}"
    );
    assert_eq!(st["busy_replies"]["model_queue"], 2, "{st}");
    assert_eq!(st["busy_replies"]["behind_conversation"], 0, "{st}");
}

/// Issue 14 item 3: a message waiting behind its conversation's slow turn runs out of its
/// own turn budget (`timeout_ms` from its arrival) before the model ever sees it: it is
/// told busy and counted behind its conversation, not as a model timeout. Only the slow
/// turn itself (stalled past 1.5 s) is the model's timeout.
#[test]
fn a_message_whose_budget_runs_out_in_line_is_busy_not_a_model_timeout() {
    let stack = Stack::new(echo_with_latency(4000), &[]);
    let cfg = stack.config(2, 1500, "");
    stack.start_bot(&cfg);
    stack.inject_group("cidBudget==", "slow first");
    stack.inject_group("cidBudget==", "second, behind the first");
    let out = stack.wait_outbox(2, Duration::from_secs(30));
    let texts: Vec<&str> = out.iter().filter_map(|e| e["text"].as_str()).collect();
    let st = stack.status();
    assert_eq!(st["models"][0]["timeouts"], 1, "{st} {texts:?}");
    assert_eq!(st["busy_replies"]["behind_conversation"], 1, "{st}");
    assert_eq!(st["busy_replies"]["model_queue"], 0, "{st}");
}

/// Issue 14 item 2: chat commands wait their turn like any message. `/status` and
/// `/reset` sent behind a slow question are answered after it, in order, and the reset
/// forgets that question's exchange (the next question's prompt has no history).
#[test]
fn chat_commands_wait_their_turn_behind_a_slow_question() {
    let stack = Stack::new(echo_with_latency(1500), &[]);
    let cfg = stack.config(2, 20_000, "access:\n  user_rate_limit: 0\n");
    stack.start_bot(&cfg);
    let conv = "cidCmd==";
    stack.inject_group(conv, "slow first");
    for cmd in ["/status", "/whoami", "/reset"] {
        stack.inject_group(conv, cmd);
    }
    let texts = |out: &[serde_json::Value]| -> Vec<String> {
        out.iter()
            .map(|e| e["text"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let out = texts(&stack.wait_outbox(4, Duration::from_secs(30)));
    let at = |want: &str| {
        out.iter()
            .position(|t| t.starts_with(want) || t.contains(want))
            .unwrap_or_else(|| panic!("no reply with {want:?}: {out:?}"))
    };
    let (slow, status, whoami, reset) = (
        at("echo: slow first"),
        at("Bot status:"),
        at("staff id:"),
        at("forgot"),
    );
    assert!(
        slow < status && status < whoami && whoami < reset,
        "replies out of arrival order: {out:?}"
    );
    let st = stack.status();
    assert_eq!(st["busy_replies"]["total"], 0, "{st}");
    // The reset applied after the slow turn recorded its exchange: memory is empty.
    stack.inject_group(conv, "after the reset");
    stack.wait_outbox(5, Duration::from_secs(30));
    let req = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(
        req["messages"].as_array().unwrap().len(),
        2,
        "the slow turn's exchange outlived /reset: {req}"
    );
}

/// A model nobody listens on (connection refused) is not "slow": the user gets
/// `reply.unreachable_text`, not the timeout's `fallback_text` (which a stalled model
/// still gets: `a_stalled_model_gets_the_fallback_reply_within_timeout_ms`).
#[test]
fn a_refused_model_connection_gets_the_unreachable_text_not_the_timeout_one() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2,
        3000,
        "reply:\n  fallback_text: \"SLOW\"\n  unreachable_text: \"UNREACHABLE\"\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &support::dead_url());
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidRefused==", "anyone there?");
    let out = stack.wait_outbox(1, Duration::from_secs(30));
    assert_eq!(
        out[0]["text"].as_str().unwrap().lines().next().unwrap(),
        "UNREACHABLE",
        "{}",
        out[0]
    );
}

#[test]
fn human_status_shows_a_models_failures_and_last_error() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 3000, "");
    let dead = support::dead_url();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &dead);
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidDown==", "anyone there?");
    stack.wait_outbox(1, Duration::from_secs(10));
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    let line = human
        .stdout
        .lines()
        .find(|l| l.contains("model local_chat"))
        .unwrap_or_else(|| panic!("{human:?}"))
        .to_string();
    assert!(line.contains("failures 1"), "{line}");
    assert!(line.contains("last error: "), "{line}");
    assert!(
        !human.stdout.contains("anyone there?"),
        "message text shown"
    );
}

/// A turn that falls back keeps its conversation's place: turn A stalls on the primary
/// model, gives that slot back and moves to the slow backup; turn B of the same
/// conversation, sent meanwhile while the primary now answers at once, still starts only
/// after A was answered, and sees A's answer in its prompt. (The bot's turn-order ticket
/// is held through the fallback; the model limiter does not order a conversation.)
#[test]
fn a_turn_that_falls_back_keeps_its_conversations_place() {
    let mut per_model = std::collections::BTreeMap::new();
    per_model.insert(
        "local-chat".to_string(),
        FakeBehavior {
            mode: FakeMode::StallBeforeHeaders,
            ..Default::default()
        },
    );
    per_model.insert(
        "backup-chat".to_string(),
        FakeBehavior {
            latency_ms: 1500,
            ..Default::default()
        },
    );
    let stack = Stack::new(
        FakeConfig {
            per_model,
            ..Default::default()
        },
        &[],
    );
    let primary = stack
        .bot_model(20_000)
        .keys("first_token_timeout_ms: 400\nfallback: backup");
    let path = stack.write_config(
        &stack
            .bot_config_with(primary, 1)
            .model(
                ModelSpec::new("backup", &stack.fake.base_url)
                    .served_as("backup-chat")
                    .timeout_ms(20_000),
            )
            .queue_wait_ms(20_000)
            .section("access:\n  user_rate_limit: 0\n"),
    );
    stack.start_bot(&path);
    let conv = "cidFallbackOrder==";
    stack.inject_group(conv, "A");
    // In flight means the fake already read its (stalling) behaviour for A's request.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let stats = stack.fake_stats();
            stats.in_flight == 1 && stats.by_model.contains_key("local-chat")
        }),
        "turn A reached the primary model"
    );
    // From now on the primary answers at once: only the turn order keeps B behind A.
    stack
        .fake
        .state
        .set_model("local-chat", FakeBehavior::default());
    stack.inject_group(conv, "B");
    assert!(
        wait_until(Duration::from_secs(20), || stack.replies_in(conv).len()
            >= 2),
        "{:?}",
        stack.outbox()
    );
    let replies: Vec<String> = stack
        .replies_in(conv)
        .iter()
        .map(|r| {
            r["text"]
                .as_str()
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(replies, ["echo: A", "echo: B"], "A (from the backup) first");
    let stats = stack.fake_stats();
    assert_eq!(stats.by_model.get("backup-chat"), Some(&1), "{stats:?}");
    let b_prompt = &stats.recent.back().unwrap().body;
    assert_eq!(b_prompt["model"], "local-chat");
    assert!(
        b_prompt["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "assistant" && m["content"] == "echo: A"),
        "B's prompt holds A's answer: {b_prompt}"
    );
}

/// One wait bound per turn: `limits.queue.max_wait_ms` (4 s) covers the wait behind the
/// conversation's earlier turn (about 3 s) and the wait for the model slot together. A2
/// waits about 3 s behind A1, then finds the only slot taken by B1 for 3 s more: it is
/// told busy after about 1 s of slot wait, not answered after waiting 6 s in all.
#[test]
fn the_wait_in_line_and_for_a_slot_share_one_bound() {
    let stack = Stack::new(echo_with_latency(3000), &[]);
    let cfg = stack.config(1, 30_000, "access:\n  user_rate_limit: 0\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "limits:\n",
        "limits:\n  queue:\n    max_waiting: 8\n    max_wait_ms: 4000\n",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidWaitA==", "A1");
    assert!(
        wait_until(Duration::from_secs(10), || stack.fake_stats().in_flight
            == 1),
        "A1 reached the model"
    );
    // B1 goes straight to the model's queue; A2, right behind it on the same stream,
    // waits in its conversation's line until A1 is answered.
    stack.inject_group("cidWaitB==", "B1");
    stack.inject_group("cidWaitA==", "A2");
    stack.wait_outbox(3, Duration::from_secs(30));
    let a2 = stack.replies_in("cidWaitA==");
    let b1 = stack.replies_in("cidWaitB==");
    let texts: Vec<&str> = a2
        .iter()
        .map(|r| r["text"].as_str().unwrap().lines().next().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0], "echo: A1");
    assert!(
        !texts[1].starts_with("echo:"),
        "A2 was told busy: {texts:?}"
    );
    assert!(b1[0]["text"].as_str().unwrap().starts_with("echo: B1"));
    let st = stack.status();
    assert_eq!(st["busy_replies"]["total"], 1, "{st}");
}
