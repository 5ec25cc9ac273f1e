//! The client against the fake server over loopback: every SSE and error-body quirk the
//! runtimes note lists, request shape, auth, and health checks.

mod model_support;

use std::time::Duration;

use clawdbot::model::demo::{FakeBehavior, FakeMode};
use clawdbot::model::TurnOutcome;
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
            "HTTP 404",
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
            .find(|(name, _)| name == n)
            .map(|(_, r)| r.clone())
            .expect("result")
    };
    assert!(get("a").is_ok());
    assert!(get("b").unwrap_err().contains("connect"), "{:?}", get("b"));
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
