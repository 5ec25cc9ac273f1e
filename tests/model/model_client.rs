//! The client against the fake server over loopback: every SSE and error-body quirk the
//! runtimes note lists, request shape, auth, and health checks.

use crate::model_support;

use std::time::Duration;

use clawdbot::model::client::ProbeError;
use clawdbot::model::{ModelError, TurnOutcome};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeMode};
use model_support::*;

#[tokio::test]
async fn streamed_quirks_are_tolerated_and_request_is_complete() {
    let srv = fake(FakeBehavior {
        quirks: true,
        crlf: true,
        chunk_chars: 3,
        ..FakeBehavior::default()
    })
    .await;
    let extra = "api_key: sk-test\nmax_tokens: 64\ntemperature: 0.2\ninclude_usage: true";
    let router = clawdbot::model::ModelRouter::new(&config(
        &[model("m", &srv.base_url, extra)],
        &[],
        8,
        1000,
    ));
    let (outcome, progress) = ask(&router, turn("c1", "hi there")).await;
    assert_eq!(
        answer_text(&outcome),
        "echo: hi there\u{fffd}",
        "NUL dropped, U+FFFD kept"
    );
    assert!(progress.len() >= 3, "progress per chunk: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[1].starts_with(&w[0])),
        "progress is the accumulated text"
    );
    let seen = srv.state.stats().recent.pop_back().expect("request seen");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.body["max_tokens"], 64);
    assert!((seen.body["temperature"].as_f64().unwrap_or(0.0) - 0.2).abs() < 1e-6);
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    assert_eq!(seen.body["messages"][1]["role"], "user");
}

#[tokio::test]
async fn non_streamed_and_json_when_streaming() {
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("json", behavior(FakeMode::JsonWhenStreaming));
    let models = [
        model("plain", &srv.base_url, "stream: false\napi_key: \"\""),
        model("json", &srv.base_url, ""),
    ];
    let cfg = config(&models, &[], 8, 1000);
    let router = clawdbot::model::ModelRouter::new(&cfg);
    let (o, progress) = ask(&router, turn("c", "q")).await;
    assert_eq!(answer_text(&o), "echo: q");
    assert_eq!(progress, vec!["echo: q".to_string()]);
    let seen = srv.state.stats().recent.pop_back().expect("seen");
    assert_eq!(seen.authorization, None, "empty api_key sends no header");
    assert_eq!(seen.body["stream"], false);
    assert!(seen.body.get("stream_options").is_none());

    let json_cfg = config(&[model("json", &srv.base_url, "")], &[], 8, 1000);
    let (o, _) = ask(
        &clawdbot::model::ModelRouter::new(&json_cfg),
        turn("c", "q2"),
    )
    .await;
    assert_eq!(answer_text(&o), "echo: q2");
}

/// Each broken-stream shape fails (not a timeout) and well within the budget.
#[tokio::test]
async fn broken_streams_fail() {
    for (mode, expect) in [
        (FakeMode::ErrorInStream, "error event"),
        (FakeMode::EndWithoutDone, "without [DONE]"),
        (FakeMode::DieMidStream, "broken stream"),
        (FakeMode::Empty200, "empty response"),
    ] {
        let srv = fake(behavior(mode)).await;
        let router = clawdbot::model::ModelRouter::new(&config(
            &[model("m", &srv.base_url, "")],
            &[],
            8,
            1000,
        ));
        let (o, _) = ask(&router, turn("c", "secret-prompt")).await;
        let (reason, timed_out) = failed_reason(&o);
        assert!(reason.contains(expect), "{mode:?}: {reason}");
        assert!(!timed_out, "{mode:?}");
        assert!(!reason.contains("secret"), "no text in reasons");
        let report = &router.reports()[0];
        assert_eq!((report.failures, report.served), (1, 0), "{mode:?}");
        assert!(report.last_error.is_some());
    }
    let srv = fake(behavior(FakeMode::Empty200)).await;
    let router = clawdbot::model::ModelRouter::new(&config(
        &[model("m", &srv.base_url, "stream: false")],
        &[],
        8,
        1000,
    ));
    assert!(failed_reason(&ask(&router, turn("c", "q")).await.0)
        .0
        .contains("empty response"));
}

fn status(code: u16, body: &str, content_type: &str) -> FakeBehavior {
    FakeBehavior {
        mode: FakeMode::Status,
        status: code,
        body: body.into(),
        content_type: content_type.into(),
        ..FakeBehavior::default()
    }
}

/// Error bodies of every shape are classified; only failover-eligible ones reach the fallback.
#[tokio::test]
async fn error_statuses_are_classified_and_only_eligible_ones_fall_back() {
    let cases = [
        (
            status(
                503,
                r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
                "application/json",
            ),
            "HTTP 503",
            true,
        ),
        (
            status(
                429,
                r#"{"error":{"message":"slots in use","type":"rate_limit_error","code":"429"}}"#,
                "application/json",
            ),
            "HTTP 429",
            true,
        ),
        (
            status(500, "Internal Server Error", "text/plain"),
            "HTTP 500",
            true,
        ),
        (
            status(
                404,
                r#"{"error":{"message":"nope","type":"not_found_error","code":null}}"#,
                "application/json",
            ),
            "HTTP 404 (type=not_found_error): not found (does base_url need /v1?",
            false,
        ),
        (
            status(401, r#"{"detail":"Invalid API key"}"#, "application/json"),
            "authentication failed",
            false,
        ),
        (
            status(
                400,
                r#"{"error":{"code":400,"message":"request (4822 tokens) exceeds the available context size (1024 tokens)","type":"exceed_context_size_error","n_prompt_tokens":4822,"n_ctx":1024}}"#,
                "application/json",
            ),
            "exceeds the model's context",
            false,
        ),
    ];
    for (b, expect, falls_back) in cases {
        let srv = fake(FakeBehavior::default()).await;
        srv.state.set_model("primary", b);
        let models = [
            model("primary", &srv.base_url, "fallback: backup"),
            model("backup", &srv.base_url, ""),
        ];
        let router = clawdbot::model::ModelRouter::new(&config(&models, &[], 8, 1000));
        let (o, _) = ask(&router, turn("c", "q")).await;
        if falls_back {
            assert_eq!(
                o,
                TurnOutcome::Answer {
                    text: "echo: q".into(),
                    model: "backup".into(),
                    fell_back: true
                },
                "{expect}"
            );
            let primary = router
                .reports()
                .into_iter()
                .find(|r| r.name == "primary")
                .expect("report");
            assert_eq!(primary.fallbacks, 1);
            assert!(
                primary.last_error.as_deref().unwrap_or("").contains(expect),
                "{:?}",
                primary.last_error
            );
        } else {
            let (reason, _) = failed_reason(&o);
            assert!(reason.contains(expect), "{reason}");
            assert!(
                !srv.state.stats().by_model.contains_key("backup"),
                "{expect}: no fallback"
            );
        }
        assert_eq!(
            srv.state.stats().by_model.get("primary"),
            Some(&1),
            "never retried"
        );
    }
}

#[tokio::test]
async fn health_checks() {
    let srv = fake(FakeBehavior::default()).await;
    let dead = format!("http://127.0.0.1:{}/v1", refused_port());
    let health = format!("health_url: \"{}/health\"", srv.base_url);
    let models = [
        model("a", &srv.base_url, ""),
        model("b", &dead, ""),
        model("c", &srv.base_url, &health),
    ];
    let router = clawdbot::model::ModelRouter::new(&config(&models, &[], 8, 1000));
    let results = router.check(Duration::from_secs(3)).await;
    let get = |n: &str| {
        results
            .iter()
            .find(|p| p.model == *n)
            .map(|p| p.result.clone())
            .expect("result")
    };
    assert!(get("a").is_ok());
    assert!(
        matches!(get("b"), Err(ProbeError::Model(ModelError::Connect(_)))),
        "{:?}",
        get("b")
    );
    assert!(get("b").unwrap_err().to_string().contains("connect"));
    assert!(get("c").is_ok());
}

/// The fake server's controls work over HTTP (for the benchmark and other processes).
#[tokio::test]
async fn fake_server_http_controls() {
    let srv = fake(FakeBehavior::default()).await;
    let http = reqwest::Client::new();
    let cfg = serde_json::json!({"default": {"mode": "status", "status": 503}, "slots": 1});
    let r = http
        .post(format!("{}/_fake/config", srv.base_url))
        .json(&cfg)
        .send()
        .await
        .expect("config");
    assert_eq!(r.status().as_u16(), 204);
    let router =
        clawdbot::model::ModelRouter::new(&config(&[model("m", &srv.base_url, "")], &[], 8, 1000));
    assert!(failed_reason(&ask(&router, turn("c", "q")).await.0)
        .0
        .contains("HTTP 503"));
    let stats: serde_json::Value = http
        .get(format!("{}/_fake/stats", srv.base_url))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["max_in_flight"], 1);
    let r = http
        .post(format!("{}/_fake/reset", srv.base_url))
        .send()
        .await
        .expect("reset");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(srv.state.stats().requests, 0);
}

/// Runs one turn against model `m` of `srv` with `reply.max_answer_chars = cap`; returns
/// the outcome, the progress texts and how long it took.
async fn hostile_turn(
    srv: &clawdbot_testkit::fake_model::FakeServer,
    extra: &str,
    cap: usize,
) -> (TurnOutcome, Vec<String>, Duration) {
    let mut cfg = config(&[model("m", &srv.base_url, extra)], &[], 8, 1000);
    cfg.reply.max_answer_chars = cap;
    let router = clawdbot::model::ModelRouter::new(&cfg);
    let t = std::time::Instant::now();
    let (o, progress) = ask(&router, turn("c", "q")).await;
    (o, progress, t.elapsed())
}

/// The answer is exactly the cap, ends with the cut mark, and every progress text is
/// within the cap too.
fn assert_capped(o: &TurnOutcome, progress: &[String], cap: usize) {
    let text = answer_text(o);
    assert_eq!(text.chars().count(), cap, "answer length");
    assert!(text.ends_with(clawdbot::model::ANSWER_CUT_MARK));
    assert!(progress.iter().all(|p| p.chars().count() <= cap));
    assert_eq!(progress.last().map(String::as_str), Some(text));
}

#[tokio::test]
async fn hostile_endless_always_ready_stream_is_cut_at_the_cap_and_closed() {
    // Issue 10 item 6: chunks always ready, never a [DONE]. The answer stops at the cap
    // long before timeout_ms, and the model's connection is closed (the server sees its
    // request end), instead of reading 200 MB.
    let srv = fake(FakeBehavior {
        chunk_chars: 7,
        ..behavior(FakeMode::Endless)
    })
    .await;
    // The cap, not the (never reached) 60 s budget, ends the turn.
    let (o, progress, took) = hostile_turn(&srv, "timeout_ms: 60000", 500).await;
    assert_capped(&o, &progress, 500);
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        wait_until(Duration::from_secs(30), || srv.state.stats().in_flight == 0).await,
        "the model request was closed"
    );
    // The default cap (8000) applies without any config.
    let cfg = config(
        &[model("m", &srv.base_url, "timeout_ms: 5000")],
        &[],
        8,
        1000,
    );
    assert_eq!(cfg.reply.max_answer_chars, 8_000);
    let (o, progress) = ask(&clawdbot::model::ModelRouter::new(&cfg), turn("c", "q")).await;
    assert_capped(&o, &progress, 8_000);
}

#[tokio::test]
async fn hostile_huge_answers_are_cut_streamed_or_not() {
    // A finite but huge answer (1 MB in 64-char chunks), streamed and as one JSON body.
    let srv = fake(FakeBehavior {
        chunk_chars: 64,
        reply: Some("word ".repeat(200_000)),
        ..FakeBehavior::default()
    })
    .await;
    let (o, progress, _) = hostile_turn(&srv, "timeout_ms: 5000", 1_000).await;
    assert_capped(&o, &progress, 1_000);
    let (o, progress, _) = hostile_turn(&srv, "timeout_ms: 5000\nstream: false", 1_000).await;
    assert_capped(&o, &progress, 1_000);
    assert!(
        wait_until(Duration::from_secs(30), || srv.state.stats().in_flight == 0).await,
        "the streamed request was closed"
    );
}

#[tokio::test]
async fn hostile_trickle_and_empty_chunks_end_at_timeout_ms() {
    // One character every 20 ms never reaches the cap: the total budget ends the turn.
    let srv = fake(FakeBehavior {
        chunk_chars: 1,
        chunk_interval_ms: 20,
        ..behavior(FakeMode::Endless)
    })
    .await;
    let (o, progress, took) = hostile_turn(&srv, "timeout_ms: 800", 8_000).await;
    let (reason, timed_out) = failed_reason(&o);
    assert!(timed_out && reason.contains("total"), "{reason}");
    // A timer never fires early; far below 30 s, nothing but the 800 ms budget ended it.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(progress.iter().all(|p| p.chars().count() <= 8_000));
    // Always-ready chunks with empty content: nothing to cap, the deadline still holds.
    srv.state.set_model(
        "m",
        FakeBehavior {
            chunk_chars: 0,
            ..behavior(FakeMode::Endless)
        },
    );
    let (o, _, took) = hostile_turn(&srv, "timeout_ms: 800", 8_000).await;
    assert!(failed_reason(&o).1, "{o:?}");
    // A timer never fires early; far below 30 s, nothing but the 800 ms budget ended it.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || srv.state.stats().in_flight == 0).await,
        "requests closed"
    );
}
