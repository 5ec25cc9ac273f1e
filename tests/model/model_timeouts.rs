//! Every timeout path ends the turn by the phase that should fire, pings never extend the
//! deadline, and the fallback is used only when enough budget is left.
//!
//! These run over real loopback HTTP on the wall clock, so no test bounds a duration
//! tightly from above (a loaded machine may run any timer late): a timer never fires
//! early, so lower bounds are exact, and an upper bound is always far below a budget set
//! to [`NEVER_MS`], which is what would fire if the phase under test did not. The budget
//! arithmetic itself is tested exactly on paused time in `src/model/budget.rs`.

use crate::model_support;

use std::time::{Duration, Instant};

use clawdbot::model::{ModelRouter, TurnOutcome};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeMode};
use model_support::*;

/// A budget that must not be the one to fire: the tests set every budget they do not test
/// to this, and a turn ending before [`well_before_never`] shows the tested one fired.
const NEVER_MS: u64 = 60_000;

/// Half of [`NEVER_MS`]: an upper bound no loaded machine comes near for a phase under
/// test, and that the phase that should not fire cannot meet.
fn well_before_never() -> Duration {
    Duration::from_millis(NEVER_MS / 2)
}

/// Runs one turn against a single model; asserts it failed by timeout, no sooner than the
/// `phase_ms` budget under test and long before a [`NEVER_MS`] budget.
async fn times_out_after(base_url: &str, extra: &str, phase_ms: u64) -> String {
    let router = ModelRouter::new(&config(&[model("m", base_url, extra)], &[], 8, 5000));
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "q")).await;
    let elapsed = t.elapsed();
    let (reason, timed_out) = failed_reason(&o);
    assert!(timed_out, "{reason}");
    assert!(
        elapsed >= Duration::from_millis(phase_ms) && elapsed < well_before_never(),
        "took {elapsed:?}, budget {phase_ms} ms ({reason})"
    );
    assert_eq!(router.reports()[0].timeouts, 1);
    reason.to_string()
}

#[tokio::test]
async fn refused_connection_fails_fast() {
    let base = format!("http://127.0.0.1:{}/v1", refused_port());
    let router = ModelRouter::new(&config(
        &[model("m", &base, &format!("timeout_ms: {NEVER_MS}"))],
        &[],
        8,
        1000,
    ));
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "q")).await;
    let (reason, timed_out) = failed_reason(&o);
    assert!(reason.contains("cannot connect") && !timed_out, "{reason}");
    assert!(t.elapsed() < well_before_never(), "{:?}", t.elapsed());
}

#[tokio::test]
async fn blackhole_listener_hits_the_first_token_budget() {
    // Accepts TCP (kernel backlog) but never reads or answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/v1", hole.local_addr().expect("addr"));
    let reason = times_out_after(
        &base,
        &format!("timeout_ms: {NEVER_MS}\nfirst_token_timeout_ms: 400"),
        400,
    )
    .await;
    assert!(reason.contains("first token"), "{reason}");
    drop(hole);
}

#[tokio::test]
async fn no_first_byte_hits_first_token_then_total() {
    let srv = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let r = times_out_after(
        &srv.base_url,
        &format!("timeout_ms: {NEVER_MS}\nfirst_token_timeout_ms: 400"),
        400,
    )
    .await;
    assert!(r.contains("first token"), "{r}");
    let r = times_out_after(&srv.base_url, "timeout_ms: 600", 600).await;
    assert!(r.contains("total"), "{r}");
    let r = times_out_after(&srv.base_url, "timeout_ms: 600\nstream: false", 600).await;
    assert!(r.contains("total"), "{r}");
    assert!(
        wait_until(Duration::from_secs(30), || srv.state.stats().in_flight == 0).await,
        "requests cancelled"
    );
}

#[tokio::test]
async fn stall_mid_stream_hits_the_idle_budget() {
    let srv = fake(behavior(FakeMode::StallMidStream)).await;
    let r = times_out_after(
        &srv.base_url,
        &format!("timeout_ms: {NEVER_MS}\nidle_timeout_ms: 300"),
        300,
    )
    .await;
    assert!(r.contains("idle"), "{r}");
}

#[tokio::test]
async fn pings_never_extend_the_deadline() {
    // Pings every 30 ms, forever, and no content: first-token and total must still fire.
    let srv = fake(FakeBehavior {
        ping_ms: Some(30),
        ..behavior(FakeMode::PingForever)
    })
    .await;
    let r = times_out_after(&srv.base_url, "timeout_ms: 700\nidle_timeout_ms: 690", 700).await;
    assert!(r.contains("total"), "{r}");
    // Pings between content chunks do not reset the idle timer either.
    srv.state.set_model(
        "m",
        FakeBehavior {
            ping_ms: Some(30),
            ..behavior(FakeMode::StallMidStream)
        },
    );
    let r = times_out_after(
        &srv.base_url,
        &format!("timeout_ms: {NEVER_MS}\nidle_timeout_ms: 300"),
        300,
    )
    .await;
    assert!(r.contains("idle"), "{r}");
}

#[tokio::test]
async fn slow_generation_hits_the_total_budget() {
    let srv = fake(FakeBehavior {
        chunk_chars: 1,
        chunk_interval_ms: 100,
        reply: Some("x".repeat(100)),
        ..FakeBehavior::default()
    })
    .await;
    // The idle budget may not exceed the total: equal to it, only the total can fire.
    let r = times_out_after(&srv.base_url, "timeout_ms: 800\nidle_timeout_ms: 800", 800).await;
    assert!(r.contains("total"), "{r}");
}

/// A turn's time in the queue is part of its budget: the second turn arrived long ago and
/// has 800 ms of its budget left, and the slot it waits for is held far longer (the first
/// turn stalls with a budget of [`NEVER_MS`]); the second must end with the first still
/// holding the slot, not when the queue's own 30 s limit runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wait_counts_toward_the_total_budget() {
    let srv = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let router = ModelRouter::new(&config(
        &[model(
            "m",
            &srv.base_url,
            &format!("timeout_ms: {NEVER_MS}"),
        )],
        &[("m", 1)],
        8,
        30_000,
    ));
    let r2 = router.clone();
    let first = tokio::spawn(async move { ask(&r2, turn("a", "q")).await.0 });
    assert!(
        wait_until(Duration::from_secs(30), || router.reports()[0].in_flight
            == 1)
        .await
    );
    let mut late = turn("b", "q");
    late.turn.arrived = Instant::now() - Duration::from_millis(NEVER_MS - 800);
    let t = Instant::now();
    let (second, _) = ask(&router, late).await;
    let waited = t.elapsed();
    assert_eq!(second, TurnOutcome::Busy, "waited {waited:?}");
    assert!(
        waited >= Duration::from_millis(800) && waited < well_before_never() / 2,
        "waited {waited:?}"
    );
    assert_eq!(
        router.reports()[0].in_flight,
        1,
        "the first turn still holds the slot"
    );
    assert!(!first.is_finished(), "the first turn ended early");
    first.abort();
}

#[tokio::test]
async fn fallback_after_a_timeout_when_budget_allows() {
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("slow", behavior(FakeMode::StallBeforeHeaders));
    let models = [
        model(
            "slow",
            &srv.base_url,
            &format!("timeout_ms: {NEVER_MS}\nfirst_token_timeout_ms: 300\nfallback: fast"),
        ),
        model("fast", &srv.base_url, ""),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let t = Instant::now();
    let (o, progress) = ask(&router, turn("c", "q")).await;
    assert_eq!(
        o,
        TurnOutcome::Answer {
            text: "echo: q".into(),
            model: "fast".into(),
            fell_back: true
        }
    );
    assert_eq!(progress.last().map(String::as_str), Some("echo: q"));
    assert!(
        t.elapsed() >= Duration::from_millis(300) && t.elapsed() < well_before_never(),
        "{:?}",
        t.elapsed()
    );
    let slow = router
        .reports()
        .into_iter()
        .find(|r| r.name == "slow")
        .expect("report");
    assert_eq!((slow.timeouts, slow.fallbacks), (1, 1));
}

#[tokio::test]
async fn fallback_skipped_when_budget_is_spent() {
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("slow", behavior(FakeMode::StallBeforeHeaders));
    // 850 of 1000 ms spent on the first token: 150 ms left < 25 % of the budget.
    let models = [
        model(
            "slow",
            &srv.base_url,
            "timeout_ms: 1000\nfirst_token_timeout_ms: 850\nfallback: fast",
        ),
        model("fast", &srv.base_url, ""),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "q")).await;
    assert!(failed_reason(&o).1, "{o:?}");
    assert!(t.elapsed() >= Duration::from_millis(850));
    assert!(
        !srv.state.stats().by_model.contains_key("fast"),
        "fallback not called"
    );
    // A total timeout leaves nothing for a fallback either.
    let models = [
        model(
            "slow",
            &srv.base_url,
            "timeout_ms: 600\nfirst_token_timeout_ms: 600\nfallback: fast",
        ),
        model("fast", &srv.base_url, ""),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let (o, _) = ask(&router, turn("c", "q")).await;
    assert!(failed_reason(&o).0.contains("total"));
    assert!(!srv.state.stats().by_model.contains_key("fast"));
}

#[tokio::test]
async fn fallback_gets_its_own_budget_from_when_it_starts() {
    // Issue 10 item 5, scaled down: primary 4800 ms (first token defaults to half, 2400 ms),
    // fallback timeout_ms 3200 (two thirds of the primary, like 4000 of 6000). The fallback's
    // own budget counts from its own start, so after the silent 2400 ms it still gets
    // min(2400 left, 3200) = 2400 ms and answers (a quarter of 3200 would be enough to try
    // it, so a timer running late on a loaded machine does not change the outcome).
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("silent", behavior(FakeMode::StallBeforeHeaders));
    let models = [
        model("silent", &srv.base_url, "timeout_ms: 4800\nfallback: spare"),
        model("spare", &srv.base_url, "timeout_ms: 3200"),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "q")).await;
    assert!(
        matches!(&o, TurnOutcome::Answer { model, fell_back: true, .. } if model == "spare"),
        "{o:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(srv.state.stats().by_model.get("spare"), Some(&1));
}

#[tokio::test]
async fn fallback_skipped_when_too_little_of_the_smaller_budget_is_left() {
    // 900 of 1000 ms go to the primary's first token: 100 ms left is less than a quarter of
    // the smaller budget (800 ms fallback): calling it could only fail, so the turn reports
    // the primary's real error instead.
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("slow", behavior(FakeMode::StallBeforeHeaders));
    let models = [
        model(
            "slow",
            &srv.base_url,
            "timeout_ms: 1000\nfirst_token_timeout_ms: 900\nfallback: fast",
        ),
        model("fast", &srv.base_url, "timeout_ms: 800"),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let (o, _) = ask(&router, turn("c", "q")).await;
    let (reason, timed_out) = failed_reason(&o);
    assert!(timed_out && reason.starts_with("slow:"), "{o:?}");
    assert!(
        !srv.state.stats().by_model.contains_key("fast"),
        "a fallback with no time left was called"
    );
    let fast = router
        .reports()
        .into_iter()
        .find(|r| r.name == "fast")
        .expect("report");
    assert_eq!((fast.timeouts, fast.failures), (0, 0));
}

#[tokio::test]
async fn a_silent_server_leaves_the_fallback_half_the_budget_by_default() {
    // No first_token_timeout_ms: with a fallback configured it defaults to half the total,
    // so a server that never answers does not eat the whole budget.
    let srv = fake(FakeBehavior::default()).await;
    srv.state
        .set_model("hung", behavior(FakeMode::StallBeforeHeaders));
    let models = [
        model("hung", &srv.base_url, "timeout_ms: 4800\nfallback: spare"),
        model("spare", &srv.base_url, ""),
    ];
    let router = ModelRouter::new(&config(&models, &[], 8, 1000));
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "q")).await;
    assert!(
        matches!(&o, TurnOutcome::Answer { model, fell_back: true, .. } if model == "spare"),
        "{o:?}"
    );
    // It waited for the first-token budget (half), and the spare answered in the other half.
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(2400), "{waited:?}");
}
