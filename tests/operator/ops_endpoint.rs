//! The HTTP ops endpoint (`ops.listen`): `/livez`, `/readyz`, `/metrics`, `/status.json`
//! and the status page, against the real daemon, the real simulator and an in-test fake
//! model, all on 127.0.0.1.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig};
use serde_json::Value;
use support::stack::Stack;
use support::{free_port, Home};

/// A bot whose ops endpoint listens on a free loopback port; returns its base URL.
fn bot_with_ops(stack: &Stack) -> String {
    bot_with_ops_and(stack, 2, 5000)
}

/// [`bot_with_ops`] with `limit` model slots and a `timeout_ms` model budget.
fn bot_with_ops_and(stack: &Stack, limit: usize, timeout_ms: u64) -> String {
    bot_with_ops_env(stack, limit, timeout_ms, &[])
}

/// [`bot_with_ops_and`], the daemon started with `env` set.
fn bot_with_ops_env(stack: &Stack, limit: usize, timeout_ms: u64, env: &[(&str, &str)]) -> String {
    let port = free_port();
    let cfg = stack.config(
        limit,
        timeout_ms,
        &format!("ops:\n  listen: \"127.0.0.1:{port}\"\n"),
    );
    stack.start_bot_env(&cfg, env);
    format!("http://127.0.0.1:{port}")
}

/// GET `url`: status code and body.
fn get(stack: &Stack, url: &str) -> (u16, String) {
    let (code, _, body) = get_accepting(stack, url, "*/*");
    (code, body)
}

/// GET `url` with an `Accept` header: status code, content type and body.
fn get_accepting(stack: &Stack, url: &str, accept: &str) -> (u16, String, String) {
    stack.rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let code = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (code, content_type, resp.text().await.unwrap())
    })
}

/// Polls `/readyz` until it answers `want` (bounded); returns the last body.
fn wait_readyz(stack: &Stack, base: &str, want: u16, within: Duration) -> Value {
    let mut last = (0, String::new());
    let ok = support::wait_until(within, || {
        last = get(stack, &format!("{base}/readyz"));
        last.0 == want
    });
    assert!(ok, "/readyz never answered {want}; last: {last:?}");
    serde_json::from_str(&last.1).expect("readyz answers JSON")
}

/// The value of the sample `name` (with its labels, exactly as exposed) in a scrape.
/// The daemon's `/metrics` once `count` (a sample's name) reads 1, waiting at most 15 s;
/// the last scrape otherwise.
fn scrape_once(stack: &Stack, base: &str, count: &str) -> String {
    let mut scrape = String::new();
    support::wait_until(Duration::from_secs(15), || {
        scrape = get(stack, &format!("{base}/metrics")).1;
        sample(&scrape, count) == Some(1.0)
    });
    scrape
}

fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn readyz_follows_the_stream_connection_through_a_dingtalk_outage() {
    let mut stack = Stack::new(FakeConfig::default(), &[]);
    let base = bot_with_ops(&stack);
    assert_eq!(get(&stack, &format!("{base}/livez")).0, 200);
    let ready = wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    assert_eq!(ready["status"], "ready");

    // DingTalk goes away: not ready, saying why, while still alive.
    stack.kill_sim();
    let down = wait_readyz(&stack, &base, 503, Duration::from_secs(10));
    let reasons = down["reasons"].to_string();
    assert!(reasons.contains("channel"), "{down}");
    assert_eq!(get(&stack, &format!("{base}/livez")).0, 200);
    let scrape = get(&stack, &format!("{base}/metrics")).1;
    assert_eq!(sample(&scrape, "clawdbot_ready"), Some(0.0), "{scrape}");
    assert_eq!(
        sample(&scrape, "clawdbot_channel_connected"),
        Some(0.0),
        "{scrape}"
    );

    // Back again: ready again, with the reconnect counted.
    stack.restart_sim();
    wait_readyz(&stack, &base, 200, Duration::from_secs(30));
    let scrape = get(&stack, &format!("{base}/metrics")).1;
    assert!(
        sample(&scrape, "clawdbot_channel_reconnects_total").is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
}

/// The overhead figure is the bot's own time: a turn at a 400 ms model lasts over 400 ms,
/// its overhead far less (the model's time is taken out), and it is counted once.
#[test]
fn a_turns_overhead_leaves_out_the_models_time() {
    let model = FakeBehavior {
        latency_ms: 400,
        ..FakeBehavior::default()
    };
    let stack = Stack::new(FakeConfig::from(model), &[]);
    let base = bot_with_ops(&stack);
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    // Past the daemon's first second, when it holds its replies (its start-up send
    // window): that wait would count as overhead.
    std::thread::sleep(Duration::from_millis(1500));
    stack.inject_group("cidOpsOverhead==", "how long");
    stack.wait_outbox(1, Duration::from_secs(15));
    let scrape = scrape_once(&stack, &base, "clawdbot_turn_overhead_seconds_count");
    let took = sample(&scrape, "clawdbot_turn_duration_seconds_sum").expect("turn duration");
    let own = sample(&scrape, "clawdbot_turn_overhead_seconds_sum").expect("overhead");
    assert!(took >= 0.4, "the turn took {took} s\n{scrape}");
    assert!(
        own > 0.0 && own < 0.2,
        "overhead {own} s of a {took} s turn\n{scrape}"
    );
    // Fine buckets: the first bound is 0.1 ms.
    assert!(
        scrape.contains("clawdbot_turn_overhead_seconds_bucket{le=\"0.0001\"}"),
        "{scrape}"
    );
}

/// The disk's share of an ACK is on the page: with every journal sync slowed to 40 ms
/// (the test hook standing in for a slow disk), each sync is counted above 30 ms and the
/// message's ACK, which waits for its sync, took at least as long.
#[test]
fn a_slow_inbox_sync_shows_in_its_own_histogram_and_in_the_ack() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let base = bot_with_ops_env(
        &stack,
        2,
        5000,
        &[("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "40")],
    );
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    stack.inject_group("cidOpsSync==", "slow disk");
    stack.wait_outbox(1, Duration::from_secs(15));
    let scrape = scrape_once(&stack, &base, "clawdbot_ack_duration_seconds_count");
    let syncs = sample(&scrape, "clawdbot_inbox_sync_duration_seconds_count").expect("syncs");
    assert!(syncs >= 1.0, "{scrape}");
    assert_eq!(
        sample(
            &scrape,
            "clawdbot_inbox_sync_duration_seconds_bucket{le=\"0.03\"}"
        ),
        Some(0.0),
        "a 40 ms sync was counted as faster\n{scrape}"
    );
    let sync_sum = sample(&scrape, "clawdbot_inbox_sync_duration_seconds_sum").expect("sum");
    assert!(sync_sum >= 0.04 * syncs, "{scrape}");
    let ack = sample(&scrape, "clawdbot_ack_duration_seconds_sum").expect("ack");
    assert!(
        ack >= 0.04,
        "the ACK did not wait for its sync: {ack} s\n{scrape}"
    );
}

#[test]
fn metrics_and_status_count_turns_by_outcome_without_text() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let base = bot_with_ops(&stack);
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    let secret_text = "ops-endpoint-secret-question";
    stack.inject_group("cidOpsMetrics==", secret_text);
    stack.wait_outbox(1, Duration::from_secs(15));

    // The reply reaches the simulator's outbox a moment before the bot counts the turn as
    // finished (after the send's answer), so wait for that count, bounded, before reading.
    let (mut code, mut scrape) = (0, String::new());
    support::wait_until(Duration::from_secs(15), || {
        (code, scrape) = get(&stack, &format!("{base}/metrics"));
        sample(&scrape, "clawdbot_turn_duration_seconds_count") == Some(1.0)
            && sample(&scrape, "clawdbot_replies_total{outcome=\"answer\"}") == Some(1.0)
            && sample(&scrape, "clawdbot_inbox_pending") == Some(0.0)
    });
    assert_eq!(code, 200);
    for (name, want) in [
        ("clawdbot_messages_received_total", 1.0),
        ("clawdbot_replies_total{outcome=\"answer\"}", 1.0),
        ("clawdbot_turn_duration_seconds_count", 1.0),
        ("clawdbot_turn_overhead_seconds_count", 1.0),
        ("clawdbot_queue_wait_seconds_count", 1.0),
        (
            "clawdbot_model_time_to_first_token_seconds_count{model=\"local_chat\"}",
            1.0,
        ),
        (
            "clawdbot_model_requests_total{model=\"local_chat\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "clawdbot_model_requests_total{model=\"local_chat\",outcome=\"timeout\"}",
            0.0,
        ),
        ("clawdbot_model_in_flight{model=\"local_chat\"}", 0.0),
        ("clawdbot_model_queue_depth{model=\"local_chat\"}", 0.0),
        ("clawdbot_model_slots{model=\"local_chat\"}", 2.0),
        ("clawdbot_inbox_pending", 0.0),
        ("clawdbot_log_write_errors_total", 0.0),
        ("clawdbot_ready", 1.0),
    ] {
        assert_eq!(sample(&scrape, name), Some(want), "{name} in\n{scrape}");
    }
    for name in [
        "clawdbot_ack_duration_seconds_count",
        "clawdbot_inbox_sync_duration_seconds_count",
    ] {
        assert!(
            sample(&scrape, name).is_some_and(|n| n >= 1.0),
            "{name} in\n{scrape}"
        );
    }
    let build = format!(
        "clawdbot_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&scrape, &build), Some(1.0), "{scrape}");
    assert!(!scrape.contains(secret_text));
    assert!(!scrape.contains("cidOpsMetrics"), "no conversation ids");
    assert!(
        scrape.contains("# TYPE clawdbot_replies_total counter\n"),
        "{scrape}"
    );

    // Prometheus asks for OpenMetrics and gets it (same samples, OpenMetrics metadata).
    let (code, content_type, om) = get_accepting(
        &stack,
        &format!("{base}/metrics"),
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(
        om.ends_with("# EOF\n") && om.contains("# TYPE clawdbot_replies counter\n"),
        "{om}"
    );
    assert_eq!(
        sample(&om, "clawdbot_replies_total{outcome=\"answer\"}"),
        Some(1.0)
    );

    let (code, status) = get(&stack, &format!("{base}/status.json"));
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["channel"]["state"], "connected", "{doc}");
    assert_eq!(doc["models"][0]["name"], "local_chat", "{doc}");
    assert_eq!(doc["models"][0]["served"], 1, "{doc}");
    assert!(doc["models"][0]["p50_ms"].is_u64(), "{doc}");
    assert_eq!(doc["replies"][0]["outcome"], "answer", "{doc}");
    assert!(!status.contains(secret_text) && !status.contains("cidOpsMetrics"));

    let (code, page) = get(&stack, &format!("{base}/"));
    assert_eq!(code, 200);
    assert!(
        page.contains("status.json"),
        "the page draws from /status.json"
    );
    assert_eq!(get(&stack, &format!("{base}/nothing-here")).0, 404);
}

/// A model that answers after `ms`.
fn slow_model(ms: u64) -> FakeConfig {
    FakeConfig::from(FakeBehavior {
        latency_ms: ms,
        ..FakeBehavior::default()
    })
}

#[test]
fn readyz_says_draining_while_a_stopping_daemon_finishes_its_turns() {
    let stack = Stack::new(slow_model(3000), &[]);
    let base = bot_with_ops_and(&stack, 2, 10_000);
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    stack.inject_group("cidOpsDrain==", "hello");
    let in_flight = "clawdbot_model_in_flight{model=\"local_chat\"}";
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            sample(&get(&stack, &format!("{base}/metrics")).1, in_flight) == Some(1.0)
        }),
        "the turn reached the model"
    );
    let mut stop = stack
        .home
        .command(&["daemon", "stop", "--name", "bot", "--timeout", "10"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("daemon stop");
    let draining = wait_readyz(&stack, &base, 503, Duration::from_secs(5));
    assert!(
        draining["reasons"].to_string().contains("draining"),
        "{draining}"
    );
    assert_eq!(
        get(&stack, &format!("{base}/livez")).0,
        200,
        "alive while draining"
    );
    assert!(stop.wait().unwrap().success());
    assert_eq!(
        stack.replies_in("cidOpsDrain==").len(),
        1,
        "the turn was finished"
    );
}

#[test]
fn non_loopback_ops_address_needs_allow_remote_and_bad_addresses_name_the_key() {
    let home = Home::new();
    let seed = support::seed_config("http://127.0.0.1:8000/v1");
    let check = |extra: &str| {
        let cfg = home.write("c.yaml", &format!("{seed}{extra}"));
        home.run(&["config", "check", "--config", cfg.to_str().unwrap()])
    };
    let r = check("ops:\n  listen: \"0.0.0.0:9464\"\n");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("ops.listen") && r.stderr.contains("allow_remote"),
        "{r:?}"
    );
    let r = check("ops:\n  listen: \"0.0.0.0:9464\"\n  allow_remote: true\n");
    assert_eq!(r.code, 0, "{r:?}");
    let r = check("ops:\n  listen: \"[::1]:9464\"\n");
    assert_eq!(r.code, 0, "{r:?}");
    let r = check("ops:\n  listen: \"localhost-ish\"\n");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("ops.listen"), "{r:?}");
    let r = check(
        "ops:\n  listen: \"127.0.0.1:9464\"\n  allowed_hosts: [\"a.example\", \"b:99999\"]\n",
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("ops.allowed_hosts[1]"), "{r:?}");
    let r =
        check("ops:\n  listen: \"127.0.0.1:9464\"\n  allowed_hosts: [\"a.example\", \"b:9\"]\n");
    assert_eq!(r.code, 0, "{r:?}");
    let r = check("ops:\n  listne: \"127.0.0.1:9464\"\n");
    assert_eq!(r.code, 2, "{r:?}");
}

/// GET `url` sending `host` as the Host header: the status code.
fn get_with_host(stack: &Stack, url: &str, host: &str) -> u16 {
    stack.rt.block_on(async {
        reqwest::Client::new()
            .get(url)
            .header("host", host)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .status()
            .as_u16()
    })
}

/// DNS rebinding: a page whose domain now resolves to 127.0.0.1 sends its own domain as
/// Host; the figures are served only for the listen address, `localhost` and
/// `ops.allowed_hosts`.
#[test]
fn the_ops_endpoint_answers_only_hosts_that_name_it() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let port = free_port();
    let cfg = stack.config(
        2,
        5000,
        &format!("ops:\n  listen: \"127.0.0.1:{port}\"\n  allowed_hosts: [\"ops.internal\"]\n"),
    );
    stack.start_bot(&cfg);
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/status.json", "/metrics", "/"] {
        let url = format!("{base}{path}");
        for host in [
            "rebind.example",
            &format!("rebind.example:{port}"),
            "127.0.0.1",
        ] {
            assert_eq!(
                get_with_host(&stack, &url, host),
                421,
                "{path} for Host {host}"
            );
        }
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            "ops.internal".to_string(),
            format!("OPS.internal:{port}"),
        ] {
            assert_eq!(
                get_with_host(&stack, &url, &host),
                200,
                "{path} for Host {host}"
            );
        }
    }
    let refused = get(&stack, &format!("{base}/status.json"));
    assert_eq!(
        refused.0, 200,
        "a plain request to the address: {refused:?}"
    );
    // Raw requests a client library would not send: an HTTP/1.1 request must name a Host
    // (HTTP/1.0 may omit it), only once; an absolute-form target's authority is checked too.
    let ours = format!("127.0.0.1:{port}");
    for (request, want) in [
        ("GET /status.json HTTP/1.1\r\n".to_string(), 400),
        (
            format!("GET /status.json HTTP/1.1\r\nHost: {ours}\r\nHost: rebind.example\r\n"),
            400,
        ),
        (
            format!("GET /status.json HTTP/1.1\r\nHost: rebind.example\r\nHost: {ours}\r\n"),
            400,
        ),
        (
            format!("GET http://rebind.example/status.json HTTP/1.1\r\nHost: {ours}\r\n"),
            421,
        ),
        (
            format!("GET http://{ours}/status.json HTTP/1.1\r\nHost: {ours}\r\n"),
            200,
        ),
        ("GET /status.json HTTP/1.0\r\n".to_string(), 200),
        (
            format!("GET /status.json HTTP/1.1\r\nHost: {ours}\r\n"),
            200,
        ),
    ] {
        assert_eq!(raw_status(port, &request), want, "{request:?}");
    }
}

/// Sends `head` (request line and headers, each ending in CRLF) plus `Connection: close`
/// to the loopback `port`; the response's status code.
fn raw_status(port: u16, head: &str) -> u16 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = Vec::new();
    let _ = tcp.take(64 * 1024).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {head:?}: {text:?}"))
}

#[test]
fn a_taken_ops_port_fails_the_start_naming_the_key() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = stack.config(2, 5000, &format!("ops:\n  listen: \"127.0.0.1:{port}\"\n"));
    let r = stack.home.run(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("ops.listen"), "{r:?}");
}

/// Where test artifacts (screenshots, scrapes) go: under target/, never in the repo.
fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
#[ignore = "needs promtool: run by .ci/run"]
fn promtool_accepts_a_live_scrape() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let base = bot_with_ops(&stack);
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    stack.inject_group("cidOpsPromtool==", "hello");
    stack.wait_outbox(1, Duration::from_secs(15));
    let (_, scrape) = get(&stack, &format!("{base}/metrics"));
    let path = artifact("metrics.txt");
    std::fs::write(&path, &scrape).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool installed (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Headless Chromium with no network beyond loopback and a throwaway profile.
fn chromium(profile: &std::path::Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    cmd.output()
        .expect("chromium installed (apt-get install chromium)")
}

#[test]
#[ignore = "needs chromium: run by .ci/run"]
fn status_page_shows_the_figures_in_headless_chromium() {
    // A slow model and more turns than slots, so the chart has load to draw (one load
    // sample every 5 s).
    let stack = Stack::new(slow_model(6000), &[]);
    let base = bot_with_ops_and(&stack, 2, 20_000);
    wait_readyz(&stack, &base, 200, Duration::from_secs(10));
    for i in 0..3 {
        stack.inject_group(&format!("cidOpsPage{i}=="), "hello");
    }
    stack.wait_outbox(3, Duration::from_secs(30));
    let status = |stack: &Stack| -> Value {
        serde_json::from_str(&get(stack, &format!("{base}/status.json")).1).unwrap()
    };
    let doc = status(&stack);
    let loaded = doc["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["models"][0]["in_flight"].as_u64() > Some(0));
    assert!(loaded, "a sample saw the slots in use: {doc}");
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            status(&stack)["models"][0]["in_flight"] == 0
        }),
        "the last turn finished"
    );

    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path(), &["--dump-dom"], &format!("{base}/"));
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        r#"<span id="ready" class="ok">ready</span>"#,
        r#"<td id="channel-state">connected</td>"#,
        r#"<td id="channel-messages">3 / 3</td>"#,
        r#"<tr data-model="local_chat"><td>local_chat</td><td>0 / 2</td><td>0</td><td>3</td>"#,
        r#"<tr data-outcome="answer"><td>answer</td><td>3</td></tr>"#,
        r#"data-series="local_chat:in_flight""#,
        r#"data-series="local_chat:queued""#,
    ] {
        assert!(
            dom.contains(want),
            "{want} not in the rendered page:\n{dom}"
        );
    }
    assert!(!dom.contains("hello"), "no message text on the page");

    let shot = artifact("ops-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,900",
        ],
        &format!("{base}/"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
