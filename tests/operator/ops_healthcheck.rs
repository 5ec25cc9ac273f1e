//! `clawdbot healthcheck`: every outcome an operator meets, against the real daemon, the
//! real simulator and an in-test fake model. Exit 0 healthy (warnings allowed), 1 a
//! check failed, 3 the daemon is not running; `--config F` is a pre-flight.

use crate::support;

use std::time::{Duration, Instant};

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig, FakeMode};
use serde_json::Value;
use support::stack::Stack;
use support::{check, dead_url, wait_until, Home, Run};

fn health(stack: &Stack, extra: &[&str]) -> Run {
    let mut args = vec!["--json", "healthcheck"];
    args.extend_from_slice(extra);
    stack.home.run(&args)
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_healthy_bot_passes_every_check_in_troubleshooting_order() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let r = health(&stack, &["--name", "bot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["name"], "bot");
    let names: Vec<String> = statuses(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "daemon",
            "channel",
            "model local_chat",
            "load local_chat",
            "prompts local_chat"
        ]
    );
    for c in doc["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()), "{c}");
        assert!(c.get("fix").is_some(), "fix key always present: {c}");
    }
    // Human form: one line per check, and without --name the only daemon is chosen.
    let human = stack.home.run(&["healthcheck"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("ok    daemon"), "{human:?}");
    assert!(human.stdout.contains("channel"), "{human:?}");
}

#[test]
fn a_model_server_that_is_down_fails_the_model_check_with_a_fix() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let dead = dead_url();
    let cfg = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &dead);
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    let r = health(&stack, &["--name", "bot"]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["kind"], "check_failed", "{doc}");
    assert!(
        support::error_message(&doc).contains("model local_chat"),
        "{doc}"
    );
    let m = check(&doc, "model local_chat");
    assert_eq!(m["status"], "fail", "{doc}");
    assert!(m["detail"].as_str().unwrap().contains(&dead), "{m}");
    assert!(m["fix"].as_str().unwrap().contains("curl"), "{m}");
    assert_eq!(check(&doc, "channel")["status"], "ok", "{doc}");
    let human = stack.home.run(&["healthcheck", "--name", "bot"]);
    assert_eq!(human.code, 1);
    assert!(human.stdout.contains("FAIL  model local_chat"), "{human:?}");
    assert!(human.stdout.contains("fix: "), "{human:?}");
}

#[test]
fn a_lost_channel_fails_the_channel_check() {
    let mut stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    assert_eq!(health(&stack, &["--name", "bot"]).code, 0);
    stack.kill_sim();
    // The stream notices at once (the socket closes); poll the check, bounded.
    let mut last = None;
    let failed = wait_until(Duration::from_secs(15), || {
        let r = health(&stack, &["--name", "bot", "--timeout", "3"]);
        let hit = r.code == 1 && check(&r.json(), "channel")["status"] == "fail";
        last = Some(r);
        hit
    });
    let r = last.unwrap();
    assert!(failed, "{r:?}");
    let doc = r.json();
    let ch = check(&doc, "channel");
    assert!(ch["fix"].as_str().is_some_and(|f| !f.is_empty()), "{ch}");
    assert_eq!(check(&doc, "model local_chat")["status"], "ok", "{doc}");
}

#[test]
fn model_timeouts_warn_but_stay_healthy() {
    // Completions take 3 s; the bot allows 600 ms, so the turn times out (fallback reply).
    let fake = FakeConfig::from(FakeBehavior {
        mode: FakeMode::StallBeforeHeaders,
        ..Default::default()
    });
    let stack = Stack::new(fake, &[]);
    let cfg = stack.config(1, 600, "");
    stack.start_bot(&cfg);
    stack.inject_group("cidSlow==", "are you there");
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(out[0]["conversation_id"], "cidSlow==", "{out:?}");
    let r = health(&stack, &["--name", "bot"]);
    assert_eq!(r.code, 0, "warnings are healthy: {r:?}");
    let doc = r.json();
    let load = check(&doc, "load local_chat");
    assert_eq!(load["status"], "warn", "{doc}");
    assert!(
        load["detail"].as_str().unwrap().contains("timeouts 1"),
        "{load}"
    );
    assert!(
        load["fix"]
            .as_str()
            .unwrap()
            .contains("max_concurrency_per_model"),
        "{load}"
    );
    let human = stack.home.run(&["healthcheck", "--name", "bot"]);
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains("warn  load local_chat"), "{human:?}");
}

#[test]
fn prompts_near_the_budget_warn() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2,
        5000,
        "policy:\n  system_prompt: \"Be brief.\"\nprompt:\n  max_chars: 200\n",
    );
    stack.start_bot(&cfg);
    assert_eq!(
        check(
            &health(&stack, &["--name", "bot"]).json(),
            "prompts local_chat"
        )["status"],
        "ok"
    );
    stack.inject_group("cidLong==", &"x".repeat(185));
    stack.wait_outbox(1, Duration::from_secs(10));
    let r = health(&stack, &["--name", "bot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let p = check(&r.json(), "prompts local_chat").clone();
    assert_eq!(p["status"], "warn", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("of 200 chars"),
        "{p}"
    );
    assert!(
        p["fix"].as_str().unwrap().contains("prompt.max_chars"),
        "{p}"
    );
}

#[test]
fn a_stalled_model_is_bounded_by_the_timeout() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    // A listener that accepts and never answers: a wedged model server.
    let wedged = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", wedged.local_addr().unwrap());
    let cfg = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &url);
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    let started = Instant::now();
    let r = health(&stack, &["--name", "bot", "--timeout", "2"]);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let m = check(&r.json(), "model local_chat").clone();
    assert_eq!(m["status"], "fail");
    assert!(m["detail"].as_str().unwrap().contains("no answer"), "{m}");
}

#[test]
fn without_a_daemon_healthcheck_exits_3() {
    let home = Home::new();
    let r = home.run(&["healthcheck", "--name", "dingtalk-bot"]);
    assert_eq!(r.code, 3, "{r:?}");
    // The hint runs as printed: this binary, this home (no config yet: exit 2 naming it).
    let hint = support::run_hint(&r.stderr, "start it with: ");
    assert_eq!(hint.code, 2, "{hint:?}");
    let default_config = home.path().join("config/dingtalk-bot.yaml");
    assert!(
        hint.stderr.contains(default_config.to_str().unwrap()),
        "{hint:?}"
    );
    let j = home.run(&["--json", "healthcheck", "--name", "dingtalk-bot"]);
    assert_eq!(j.code, 3);
    assert_eq!(j.json()["exit_code"], 3);
}

#[test]
fn preflight_passes_and_fails_without_a_daemon() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    let r = health(&stack, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(
        statuses(&doc),
        [
            ("config".to_string(), "ok".to_string()),
            ("dingtalk credentials".into(), "ok".into()),
            ("model local_chat".into(), "ok".into()),
        ]
    );
    assert!(
        check(&doc, "model local_chat")["detail"]
            .as_str()
            .unwrap()
            .contains("completion"),
        "{doc}"
    );
    assert_eq!(stack.fake_stats().requests, 1, "one tiny completion");

    // Wrong secret, a dead model and a dead Redis (state.backend: redis): all fail,
    // with fixes; the Redis check names host:port, never the URL's password.
    let dead = dead_url();
    let redis_port = support::free_port();
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &dead)
        .replace("stack-secret", "wrong-secret")
        + &format!(
            "state:\n  backend: redis\n  redis:\n    url: \"redis://:hunter2@127.0.0.1:{redis_port}/0\"\n"
        );
    let bad_cfg = stack.home.write("bad.yaml", &bad);
    let r = health(&stack, &["--config", bad_cfg.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    assert!(
        check(&doc, "redis")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{redis_port}")),
        "{doc}"
    );
    assert!(!r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"));
    for name in ["dingtalk credentials", "model local_chat", "redis"] {
        let c = check(&doc, name);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
    }
    assert!(!r.stdout.contains("wrong-secret") && !r.stderr.contains("wrong-secret"));
    assert!(
        check(&doc, "dingtalk credentials")["detail"]
            .as_str()
            .unwrap()
            .contains(&stack.sim_url),
        "{doc}"
    );

    // A config that does not load is a config error (2) naming the file.
    let broken = stack.home.write("broken.yaml", "models: [\n");
    let r = stack
        .home
        .run(&["healthcheck", "--config", broken.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("broken.yaml"), "{r:?}");
}

/// A base_url without its `/v1` gets a 404 from the server: the check says what to fix
/// instead of a bare status.
#[test]
fn a_base_url_without_v1_is_named_as_the_likely_cause_of_a_404() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    let no_prefix = stack.fake.base_url.trim_end_matches("/v1").to_string();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&stack.fake.base_url, &no_prefix);
    let cfg = stack.home.write("no_v1.yaml", &text);
    let r = health(&stack, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let detail = check(&r.json(), "model local_chat")["detail"].to_string();
    assert!(
        detail.contains("404") && detail.contains("does base_url need /v1?"),
        "{detail}"
    );
}

/// A password in a URL's user-info (`http://user:PASS@host/v1`) is shown as `***` in
/// every healthcheck line and fix hint (pre-flight and live, text and --json), in
/// `daemon status` and in the log, while the model is still reached with it.
#[test]
fn passwords_in_url_user_info_are_masked_everywhere() {
    const PASSWORD: &str = "s3cret-pw-5521";
    // A secret in the query string too: masked the same way, and the endpoint's path goes
    // before the query (`/v1/models?key=...`), for requests and the fix hint alike.
    const QUERY_SECRET: &str = "QSECRET-4417";
    let stack = Stack::new(FakeConfig::default(), &[]);
    let with_user_info = |url: &str| {
        format!(
            "{}?key={QUERY_SECRET}",
            url.replacen("http://", &format!("http://clawuser:{PASSWORD}@"), 1)
        )
    };
    let base = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&base).unwrap().replacen(
        &format!("base_url: \"{}\"", stack.fake.base_url),
        &format!("base_url: \"{}\"", with_user_info(&stack.fake.base_url)),
        1,
    );
    assert!(text.contains(PASSWORD));
    let live = stack.home.write("live.yaml", &text);
    let dead = stack.home.write(
        "dead.yaml",
        &text.replacen(
            &with_user_info(&stack.fake.base_url),
            &with_user_info(&dead_url()),
            1,
        ),
    );
    let mut shown = Vec::new();
    for cfg in [&live, &dead] {
        for json in [true, false] {
            let mut args = vec!["healthcheck", "--config", cfg.to_str().unwrap()];
            if json {
                args.insert(0, "--json");
            }
            shown.push(stack.home.run(&args));
        }
    }
    assert_eq!(
        shown[0].code, 0,
        "the live pre-flight passes: {:?}",
        shown[0]
    );
    assert_eq!(
        shown[2].code, 1,
        "the dead pre-flight fails: {:?}",
        shown[2]
    );
    let dead_model = check(&shown[2].json(), "model local_chat").clone();
    assert!(
        dead_model["detail"]
            .as_str()
            .unwrap()
            .contains("clawuser:***@")
            && dead_model["fix"]
                .as_str()
                .unwrap()
                .contains("clawuser:***@"),
        "the URL is shown, masked: {dead_model}"
    );
    assert!(
        dead_model["fix"]
            .as_str()
            .unwrap()
            .contains("/models?key=***"),
        "the hint's path goes before the masked query: {dead_model}"
    );

    stack.start_bot(&live);
    shown.push(health(&stack, &["--name", "bot"]));
    shown.push(stack.home.run(&["healthcheck", "--name", "bot"]));
    shown.push(
        stack
            .home
            .run(&["--json", "daemon", "status", "--name", "bot"]),
    );
    assert_eq!(shown[4].code, 0, "{:?}", shown[4]);
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    for run in &shown {
        assert!(
            !run.stdout.contains(PASSWORD)
                && !run.stderr.contains(PASSWORD)
                && !run.stdout.contains(QUERY_SECRET)
                && !run.stderr.contains(QUERY_SECRET),
            "a secret is shown: {run:?}"
        );
    }
    let logs = stack.home.all_logs();
    assert!(
        !logs.contains(PASSWORD) && !logs.contains(QUERY_SECRET),
        "the password is in the log:\n{logs}"
    );
}

/// With a model that never answers, the pre-flight says what it is waiting for while it
/// waits (a line on stderr as each check starts), not only at the end of the timeout.
#[test]
fn preflight_announces_each_check_while_a_model_never_answers() {
    let home = Home::new();
    let hang = support::silent_server();
    let cfg = home.write("hang.yaml", &support::seed_config(&format!("{hang}/v1")));
    let mut child = home
        .command(&[
            "healthcheck",
            "--config",
            cfg.to_str().unwrap(),
            "--timeout",
            "300",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut seen = Vec::new();
    let line = support::wait_stderr_line(&mut child, Duration::from_secs(30), &mut seen, |l| {
        l.contains("model local_chat:")
    });
    let still_running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap_or_else(|| panic!("no progress line for the model; stderr: {seen:?}"));
    assert!(still_running, "the line came only at the end: {seen:?}");
    assert!(line.contains(&format!("{hang}/v1/models")), "{line}");
    assert!(line.contains("up to 300 s"), "{line}");
    // The channel's warning (no channel section) came first, as its own line.
    assert!(
        seen.iter().any(|l| l.starts_with("warn  channel")),
        "{seen:?}"
    );
}

/// Issue 14 item 4, through the real daemon: a model served by two replicas, one of them
/// down. Every message is answered (the refused request is retried on the healthy
/// replica); the healthcheck has one line per replica, the down one failing with a fix
/// naming its key; `daemon status --json` lists `models[].replicas[]` (in flight, state,
/// failures; the URL's password masked) and `/metrics` has a `replica` label.
#[test]
fn a_model_with_a_down_replica_is_answered_and_reported_per_replica() {
    const PASSWORD: &str = "replica-pw-93k";
    // Slow enough that turns overlap: while the healthy replica holds one, the down one
    // has fewer in flight and is picked (a tie would leave it to the draw).
    let stack = Stack::new(
        FakeBehavior {
            latency_ms: 500,
            ..FakeBehavior::default()
        }
        .into(),
        &[],
    );
    let dead = dead_url().replacen("http://", &format!("http://op:{PASSWORD}@"), 1);
    let port = support::free_port();
    let model = stack
        .bot_model(10_000)
        .replicas(&[(&stack.fake.base_url, Some(2)), (&dead, Some(2))]);
    let cfg = stack.write_config(
        &stack
            .bot_config_with(model, 4)
            .section(&format!("ops:\n  listen: \"127.0.0.1:{port}\"\n")),
    );
    stack.start_bot(&cfg);

    let conversations: Vec<String> = (0..8).map(|i| format!("cidReplica{i}==")).collect();
    for c in &conversations {
        stack.inject_group(c, "hello replicas");
    }
    let replies = stack.wait_outbox(conversations.len(), Duration::from_secs(30));
    for c in &conversations {
        let mine: Vec<_> = replies
            .iter()
            .filter(|r| r["conversation_id"] == c.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{c}: {replies:?}");
        assert!(
            mine[0].to_string().contains("echo: hello replicas"),
            "{c}: {}",
            mine[0]
        );
    }
    assert!(
        stack.fake_stats().max_in_flight <= 2,
        "above the healthy replica's limit"
    );

    let status = stack.status();
    let text = status.to_string();
    assert!(!text.contains(PASSWORD), "password in status: {text}");
    let replicas = status["models"][0]["replicas"]
        .as_array()
        .expect("replicas")
        .clone();
    assert_eq!(replicas.len(), 2, "{status}");
    assert_eq!(replicas[0]["base_url"], stack.fake.base_url.as_str());
    assert_eq!(replicas[0]["failures"], 0);
    assert_eq!(replicas[0]["served"], conversations.len());
    // Three failures in a row cool it down; with its limit of 2, one more request may
    // already be on its way when the third failure is recorded (seen on a loaded machine).
    assert!(
        replicas[1]["failures"]
            .as_u64()
            .is_some_and(|n| (1..=4).contains(&n)),
        "{status}"
    );
    let retries = status["models"][0]["replica_retries"]
        .as_u64()
        .expect("retries");
    assert_eq!(
        Some(retries),
        replicas[1]["failures"].as_u64(),
        "each failure retried"
    );
    for r in &replicas {
        assert_eq!(r["in_flight"], 0, "{r}");
        assert!(
            r["state"] == "healthy" || r["state"] == "cooling_down",
            "{r}"
        );
    }

    let r = health(&stack, &["--name", "bot"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !r.stdout.contains(PASSWORD),
        "password in the healthcheck: {r:?}"
    );
    let doc = r.json();
    assert_eq!(
        check(&doc, "model local_chat replica 0")["status"],
        "ok",
        "{doc}"
    );
    let down = check(&doc, "model local_chat replica 1");
    assert_eq!(down["status"], "fail", "{doc}");
    assert!(
        down["fix"]
            .as_str()
            .unwrap()
            .contains("models.local_chat.replicas[1].base_url"),
        "{down}"
    );

    let scrape = stack.rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    });
    assert!(!scrape.contains(PASSWORD));
    for line in [
        "clawdbot_model_replica_in_flight{model=\"local_chat\",replica=\"0\"} 0",
        "clawdbot_model_replica_slots{model=\"local_chat\",replica=\"1\"} 2",
    ] {
        assert!(scrape.contains(line), "{line} missing:\n{scrape}");
    }
    assert!(
        scrape
            .contains("clawdbot_model_replica_failures_total{model=\"local_chat\",replica=\"1\"}"),
        "{scrape}"
    );
}
