//! `clawdbot send`: through the real bot daemon to the real simulator. Exit 0 only when
//! DingTalk accepted the message (it is in the simulator's outbox, by the right route);
//! 1 when DingTalk refused it; 2 for the caller's mistakes; 3 when the daemon is down.

use crate::support;

use clawdbot_testkit::fake_model::FakeConfig;
use serde_json::{json, Value};
use support::stack::Stack;
use support::{run_hint, seed_config, wait_until, Home};

use std::time::Duration;

fn started() -> Stack {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2, 5000, "", // targets: test-group -> cidStackGroup==
    );
    // A user alias next to the group one.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "      test-group: \"cidStackGroup==\"\n",
        "      test-group: \"cidStackGroup==\"\n      ops-lead: \"user:0423001\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack
}

fn send(stack: &Stack, extra: &[&str]) -> support::Run {
    let mut args = vec!["send", "--name", "bot"];
    args.extend_from_slice(extra);
    stack.home.run(&args)
}

fn faults(stack: &Stack, f: Value) {
    stack.rt.block_on(stack.sim.faults(f)).expect("set faults");
}

#[test]
fn text_to_an_alias_a_conversation_and_a_user_lands_in_the_outbox() {
    let stack = started();
    let r = send(
        &stack,
        &["--to", "test-group", "--text", "ping alias", "--json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["route"], "group_send");
    assert_eq!(doc["target"], "cidStackGroup==");
    assert_eq!(
        doc["name"], "bot",
        "the daemon is `name`, the conversation `target`"
    );
    assert!(doc["process_query_key"].is_string(), "{doc}");

    let r = send(&stack, &["--to", "cidOther==", "--text", "ping cid"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("via group_send"), "{r:?}");
    let r = send(&stack, &["--to", "user:0423009", "--text", "ping user"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = send(&stack, &["--to", "ops-lead", "--text", "ping lead"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The outbox holds exactly these, each by its route, in order; no waiting needed:
    // exit 0 means DingTalk had already accepted it.
    let out = stack.outbox();
    let seen: Vec<(String, String, String)> = out
        .iter()
        .map(|e| {
            (
                e["route"].as_str().unwrap_or("").to_string(),
                e["text"].as_str().unwrap_or("").to_string(),
                e["conversation_id"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| e["user_ids"][0].as_str().map(|u| format!("user:{u}")))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let want = [
        ("group_send", "ping alias", "cidStackGroup=="),
        ("group_send", "ping cid", "cidOther=="),
        ("batch_send", "ping user", "user:0423009"),
        ("batch_send", "ping lead", "user:0423001"),
    ];
    assert_eq!(
        seen,
        want.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(out.iter().all(|e| e["msg_key"] == "sampleText"), "{out:?}");
    // Each send leaves an audit line (target and size, never the text).
    let audited = wait_until(Duration::from_secs(30), || {
        stack.home.all_logs().matches("operator send").count() >= 4
    });
    let logs = stack.home.all_logs();
    assert!(audited, "no audit line per send: {logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("operator send") && l.contains("test-group")),
        "{logs}"
    );
    assert!(!logs.contains("ping alias"), "message text in the log");
}

#[test]
fn markdown_uses_sample_markdown_with_a_title() {
    let stack = started();
    let text = "### Deploy done\n- api: ok\n- web: ok";
    let r = send(
        &stack,
        &["--to", "test-group", "--text", text, "--markdown"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = send(
        &stack,
        &["--to", "user:0423001", "--text", "**bold**", "--markdown"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let out = stack.outbox();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["msg_key"], "sampleMarkdown");
    assert_eq!(out[0]["route"], "group_send");
    let param: Value = serde_json::from_str(out[0]["body"]["msgParam"].as_str().unwrap()).unwrap();
    assert_eq!(param["text"], text);
    assert_eq!(param["title"], "Deploy done");
    assert_eq!(out[1]["msg_key"], "sampleMarkdown");
    assert_eq!(out[1]["route"], "batch_send");
    let param: Value = serde_json::from_str(out[1]["body"]["msgParam"].as_str().unwrap()).unwrap();
    assert_eq!(param["title"], "bold", "no stray markers in the title");
}

#[test]
fn dingtalk_refusing_beyond_the_retry_exits_1_and_nothing_is_sent() {
    let stack = started();
    // The OpenAPI retries a QPS 403 once (after 1 s): two in a row are a refusal.
    faults(&stack, json!({"qps_403": 2}));
    let r = send(&stack, &["--to", "test-group", "--text", "throttled"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("QpsLimit"), "{r:?}");
    assert!(r.stderr.contains("groupMessages/send"), "{r:?}");
    assert!(!r.stderr.contains("throttled"), "message text in the error");

    // A refused token is refreshed once: two refusals in a row fail the send.
    faults(&stack, json!({"invalid_auth": 2}));
    let r = send(
        &stack,
        &["--json", "--to", "user:0423001", "--text", "unauth"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["error"]["kind"], "refused", "{doc}");
    assert!(
        support::error_message(&doc).contains("InvalidAuthentication"),
        "{doc}"
    );
    assert!(stack.outbox().is_empty(), "{:?}", stack.outbox());

    // One fault is absorbed by the retry: the message goes out and exit is 0.
    faults(&stack, json!({"qps_403": 1}));
    let r = send(&stack, &["--to", "test-group", "--text", "after one 403"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = stack.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["text"], "after one 403");
}

#[test]
fn caller_mistakes_exit_2_with_a_clear_error() {
    let stack = started();
    let r = send(&stack, &["--to", "no-such-alias", "--text", "hello"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no-such-alias"), "{r:?}");
    assert!(r.stderr.contains("channel.dingtalk.targets"), "{r:?}");
    // The caller's mistake is not the channel's failure: not counted, not logged as one.
    let channel = &stack.status()["channel"];
    assert_eq!(channel["send_failures"], 0, "{channel}");
    assert!(
        !channel["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-alias"),
        "{channel}"
    );
    assert!(
        !stack.home.all_logs().contains("DingTalk send failed"),
        "logged as a channel failure"
    );
    for empty in ["", "   \n "] {
        let r = send(&stack, &["--to", "test-group", "--text", empty]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("--text"), "{r:?}");
    }
    let r = send(&stack, &["--to", "user:", "--text", "hello"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = stack
        .home
        .run(&["send", "--name", "bot", "--text", "hello"]);
    assert_eq!(r.code, 2, "missing --to: {r:?}");
    assert!(stack.outbox().is_empty());
}

#[test]
fn without_a_running_daemon_send_exits_3_naming_the_start_command() {
    let home = Home::new();
    let r = home.run(&[
        "send",
        "--name",
        "dingtalk-bot",
        "--to",
        "test-group",
        "--text",
        "ping",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    // The hint runs as printed: this binary, this home (no config yet: exit 2 naming it).
    let hint = run_hint(&r.stderr, "start it with: ");
    assert_eq!(hint.code, 2, "{hint:?}");
    let default_config = home.path().join("config/dingtalk-bot.yaml");
    assert!(
        hint.stderr.contains(default_config.to_str().unwrap()),
        "{hint:?}"
    );
    let j = home.run(&[
        "--json",
        "send",
        "--name",
        "dingtalk-bot",
        "--to",
        "test-group",
        "--text",
        "ping",
    ]);
    assert_eq!(j.code, 3, "{j:?}");
    assert_eq!(j.json()["exit_code"], 3);
}

/// Holds daemon `name`'s start lock (as a `daemon start` in progress does), so the daemon
/// does not put back files deleted meanwhile.
fn hold_start_lock(home: &Home, name: &str) -> std::fs::File {
    use clawdbot::daemon::pidfile::{open_lock_file, try_lock_exclusive, TryLock};
    let file = open_lock_file(&home.state_dir(name).join("start.lock")).unwrap();
    match try_lock_exclusive(file).unwrap() {
        TryLock::Acquired(f) => f,
        TryLock::HeldByOther => panic!("start lock busy"),
    }
}

#[test]
fn a_live_daemon_without_its_socket_is_cannot_tell_for_send_and_healthcheck_as_for_status() {
    let home = Home::new();
    let cfg = home.write("bot.yaml", &seed_config("http://127.0.0.1:9/v1"));
    let r = home.run(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let start_lock = hold_start_lock(&home, "bot");
    std::fs::remove_file(home.run_dir("bot").join("control.sock")).unwrap();

    let st = home.run(&["daemon", "status", "--name", "bot"]);
    assert_eq!(st.code, 4, "{st:?}");
    let verdict = st.stdout.trim();
    assert!(verdict.contains("cannot tell"), "{st:?}");
    for args in [
        &["send", "--name", "bot", "--to", "cidX==", "--text", "hi"][..],
        &["healthcheck", "--name", "bot"],
    ] {
        let r = home.run(args);
        assert_eq!(r.code, 4, "{args:?}: {r:?}");
        assert!(r.stderr.contains(verdict), "{args:?}: {r:?}");
    }
    let mut json_args = vec![
        "--json", "send", "--name", "bot", "--to", "cidX==", "--text", "hi",
    ];
    let j = home.run(&json_args);
    assert_eq!(j.json()["exit_code"], 4, "{j:?}");
    json_args[1] = "healthcheck";
    json_args.truncate(4);
    assert_eq!(home.run(&json_args).json()["exit_code"], 4);

    // Once the lock is free again the daemon restores its socket and answers.
    drop(start_lock);
    assert!(wait_until(Duration::from_secs(10), || {
        home.run(&["daemon", "status", "--name", "bot"]).code == 0
    }));
}

/// `clawdbot conversations`: the ids an operator needs for aliases and allowlists, from
/// the daemon that saw them, most recent first; never a word of what was said.
#[test]
fn conversations_lists_what_the_bot_saw_newest_first_without_message_text() {
    let stack = started();
    let before = stack.home.run(&["conversations", "--name", "bot"]);
    assert_eq!(before.code, 0, "{before:?}");
    assert!(before.stderr.contains("no conversation yet"), "{before:?}");

    stack.inject(
        json!({"text": "quarterly numbers are secret-words-one", "conversation_type": "group",
        "conversation_id": "cidOpsRoom==", "conversation_title": "Ops room"}),
    );
    stack.wait_outbox(1, Duration::from_secs(30));
    stack.inject(
        json!({"text": "my password is secret-words-two", "conversation_type": "direct",
        "conversation_id": "cidDirectLi==", "sender_staff_id": "0423777"}),
    );
    stack.wait_outbox(2, Duration::from_secs(30));
    stack.inject(
        json!({"text": "again secret-words-three", "conversation_type": "group",
        "conversation_id": "cidOpsRoom==", "conversation_title": "Ops room"}),
    );
    stack.wait_outbox(3, Duration::from_secs(30));

    let r = stack
        .home
        .run(&["--json", "conversations", "--name", "bot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("secret-words"), "{r:?}");
    let doc = r.json();
    assert_eq!(doc["ok"], true);
    let list = doc["conversations"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{doc}");
    assert_eq!(list[0]["id"], "cidOpsRoom==");
    assert_eq!(list[0]["kind"], "group");
    assert_eq!(list[0]["title"], "Ops room");
    assert_eq!(list[0]["messages"], 2);
    assert_eq!(list[1]["id"], "cidDirectLi==");
    assert_eq!(list[1]["kind"], "direct");
    assert!(list[1]["title"].is_null(), "{doc}");
    assert!(list[0]["last_activity_ms"].as_u64() >= list[1]["last_activity_ms"].as_u64());

    let one = stack
        .home
        .run(&["--json", "conversations", "--name", "bot", "--limit", "1"]);
    assert_eq!(
        one.json()["conversations"].as_array().map(Vec::len),
        Some(1)
    );

    let human = stack.home.run(&["conversations", "--name", "bot"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.starts_with("ID"), "{human:?}");
    let room = human
        .stdout
        .lines()
        .find(|l| l.starts_with("cidOpsRoom=="))
        .unwrap_or("");
    assert!(
        room.contains(" group ") && room.ends_with("Ops room"),
        "{human:?}"
    );
    assert!(
        human.stderr.contains("send --name bot --to ID"),
        "{human:?}"
    );
    assert!(!human.stdout.contains("secret-words"), "{human:?}");
    assert!(!stack.home.all_logs().contains("secret-words"));

    let bad = stack
        .home
        .run(&["conversations", "--name", "bot", "--limit", "201"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    let none = stack.home.run(&["conversations", "--name", "nobody"]);
    assert_eq!(none.code, 3, "{none:?}");
}
