//! Opt-in: a streamed and a non-streamed turn against a real OpenAI-compatible server
//! (llama.cpp's `llama-server` from `/work/shared/tools/real-llm-server.sh`).
//! Ignored by plain `cargo test` and by `.ci/run` (building llama-server takes ~4.5 min on
//! 2 cores); run it with `CLAWDBOT_REAL_LLM_URL=http://127.0.0.1:18080/v1` (and optionally
//! `CLAWDBOT_REAL_LLM_MODEL`, default `tiny`) and `-- --ignored`; without the URL it fails.
//! The random-weight model writes garbage: only shapes are asserted, never text.

use crate::model_support;

use std::time::{Duration, Instant};

use clawdbot::model::{ModelRouter, TurnOutcome};
use model_support::*;

/// The server's base URL; a failure (never a silent pass) when it is not set.
fn real_url() -> String {
    std::env::var("CLAWDBOT_REAL_LLM_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("set CLAWDBOT_REAL_LLM_URL to a running llama-server (../shared/tools/real-llm-server.sh)")
}

fn real_router(url: &str, extra: &str) -> ModelRouter {
    let name = std::env::var("CLAWDBOT_REAL_LLM_MODEL").unwrap_or_else(|_| "tiny".into());
    let m = model(
        "real",
        url,
        &format!("timeout_ms: 30000\nmax_tokens: 24\ntemperature: 0.7\n{extra}"),
    )
    .served_as(&name);
    ModelRouter::new(&config(&[m], &[("real", 2)], 8, 30000))
}

/// The random model may emit only whitespace or NULs: an `EmptyAnswer` failure is an
/// acceptable shape; anything else must be an answer.
fn assert_shape(o: &TurnOutcome, progress: &[String], streamed: bool) {
    match o {
        TurnOutcome::Answer {
            text,
            model,
            fell_back,
        } => {
            assert_eq!(model, "real");
            assert!(!fell_back);
            assert!(!text.trim().is_empty() && !text.contains('\0'));
            assert_eq!(progress.last(), Some(text), "last progress is the answer");
            if streamed {
                assert!(progress.windows(2).all(|w| w[1].starts_with(&w[0])));
            }
        }
        TurnOutcome::Failed { reason, .. } => {
            assert!(reason.contains("answer was empty"), "{reason}")
        }
        TurnOutcome::Busy => panic!("busy with an idle server"),
    }
}

#[tokio::test]
#[ignore = "needs a real llama-server: set CLAWDBOT_REAL_LLM_URL, run with --ignored"]
async fn real_llm_streamed_and_non_streamed() {
    let url = real_url();
    for (extra, streamed) in [
        ("stream: true\ninclude_usage: true", true),
        ("stream: true", true),
        ("stream: false", false),
    ] {
        let router = real_router(&url, extra);
        let checks = router.check(Duration::from_secs(5)).await;
        assert!(checks[0].result.is_ok(), "health: {:?}", checks[0].result);
        let t = Instant::now();
        let (o, progress) = ask(&router, turn("real", "hello")).await;
        eprintln!(
            "real LLM ({extra:?}): {:?} in {:?}, {} progress updates",
            match &o {
                TurnOutcome::Answer { text, .. } =>
                    format!("answer of {} chars", text.chars().count()),
                other => format!("{other:?}"),
            },
            t.elapsed(),
            progress.len()
        );
        assert_shape(&o, &progress, streamed);
        let r = &router.reports()[0];
        assert_eq!(r.served + r.failures, 1);
    }
}

#[tokio::test]
#[ignore = "needs a real llama-server: set CLAWDBOT_REAL_LLM_URL, run with --ignored"]
async fn real_llm_context_overflow_is_not_retried() {
    let url = real_url();
    let router = real_router(&url, "stream: true");
    let mut t = turn("real", &"hello world ".repeat(3000));
    t.messages.truncate(2);
    let (o, _) = ask(&router, t).await;
    let (reason, timed_out) = failed_reason(&o);
    assert!(!timed_out);
    assert!(
        reason.contains("context") || reason.contains("HTTP 400"),
        "{reason}"
    );
}
