//! One model name over several runtimes (`models.NAME.replicas`), against real fake model
//! servers on loopback: a stalled and a down replica lose their traffic to the healthy
//! one, no replica ever gets more requests at once than its own `max_concurrency`, and a
//! failed request is sent to another replica only before its first token and only while
//! the turn has time left. Selection and cooldown timings are unit-tested on paused time
//! in `src/model/replicas.rs`.

use crate::model_support;

use std::time::Duration;

use clawdbot::model::{ModelRouter, TurnOutcome};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeMode, FakeServer};
use model_support::*;

fn requests(fake: &FakeServer) -> u64 {
    fake.state.stats().requests
}

/// Runs `n` turns at once over 8 conversations; their outcomes.
async fn flood(router: &ModelRouter, n: usize) -> Vec<TurnOutcome> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let router = router.clone();
            tokio::spawn(async move {
                ask(&router, turn(&format!("c{}", i % 8), &format!("q{i}")))
                    .await
                    .0
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("turn finishes (a hang otherwise)")
                .expect("task"),
        );
    }
    out
}

/// Issue 14 "Done when": two (here three) replicas of one model, one stalled (no byte
/// before the first-token budget) and one down (connection refused). Every turn is
/// answered by the healthy replica (a failure before the first token is retried there),
/// the healthy one never holds more than its own limit at once, and after three failures
/// in a row each broken replica cools down and gets no further request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_down_replicas_lose_their_traffic_within_each_replicas_limit() {
    let healthy = fake(FakeBehavior {
        latency_ms: 50,
        ..FakeBehavior::default()
    })
    .await;
    let stalled = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let down = format!("http://127.0.0.1:{}/v1", refused_port());
    let spec = ModelSpec::new("m", "unused")
        .replicas(&[
            (&healthy.base_url, Some(2)),
            (&stalled.base_url, Some(1)),
            (&down, Some(1)),
        ])
        .keys("timeout_ms: 20000\nfirst_token_timeout_ms: 400");
    let router = ModelRouter::new(&config(&[spec], &[("m", 4)], 64, 30_000));

    // A flood: 16 turns at once.
    let outcomes = flood(&router, 16).await;
    for o in &outcomes {
        assert!(answer_text(o).starts_with("echo: q"), "{o:?}");
    }
    let peak = healthy.state.stats().max_in_flight;
    assert_eq!(
        peak, 2,
        "the healthy replica was full but never above its limit of 2"
    );
    assert!(
        stalled.state.stats().max_in_flight <= 1,
        "stalled replica above its limit of 1"
    );

    // Then one at a time, until both broken replicas cooled down (each needs three
    // failures in a row; the draw decides when they are picked).
    let cooled = |router: &ModelRouter| {
        let r = &router.reports()[0].replicas;
        r[1].state == "cooling_down" && r[2].state == "cooling_down"
    };
    for i in 0..60 {
        if cooled(&router) {
            break;
        }
        let (o, _) = ask(&router, turn("solo", &format!("s{i}"))).await;
        assert!(answer_text(&o).starts_with("echo: s"), "{o:?}");
    }
    assert!(cooled(&router), "{:?}", router.reports()[0].replicas);
    let report = &router.reports()[0];
    assert_eq!(
        report.replicas[1].failures, 3,
        "stalled: cooled after 3 failures"
    );
    assert_eq!(
        report.replicas[2].failures, 3,
        "down: cooled after 3 failures"
    );
    assert_eq!(requests(&stalled), 3, "one request per failure, no more");
    assert_eq!(
        report.replica_retries, 6,
        "each failure retried on another replica"
    );
    assert_eq!(report.failures, 6);

    // Cooling down: every further turn goes to the healthy replica, at once.
    let (before_healthy, before_stalled) = (requests(&healthy), requests(&stalled));
    for o in flood(&router, 8).await {
        assert!(answer_text(&o).starts_with("echo: q"), "{o:?}");
    }
    assert_eq!(requests(&healthy) - before_healthy, 8);
    assert_eq!(
        requests(&stalled),
        before_stalled,
        "no request to a cooling replica"
    );
    let report = &router.reports()[0];
    assert_eq!(
        report.replicas[2].failures, 3,
        "no request to the down one either"
    );
    assert_eq!(report.replica_retries, 6);
    assert!(healthy.state.stats().max_in_flight <= 2);
    // Status shows each replica; the in-flight counts all went back.
    assert_eq!(report.replicas.len(), 3);
    assert!(report.replicas.iter().all(|r| r.in_flight == 0));
    assert_eq!(report.replicas[0].base_url, healthy.base_url);
}

/// A request that went silent after its first token is not sent again (the user may have
/// seen the text): the turn fails and the other replica gets nothing. One that fails before it
/// is retried only while enough of the turn is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_another_replica_only_before_the_first_token_and_within_the_budget() {
    let good = fake(FakeBehavior::default()).await;
    let breaks = fake(behavior(FakeMode::StallMidStream)).await;
    let spec = ModelSpec::new("m", "unused")
        .replicas(&[(&good.base_url, Some(1)), (&breaks.base_url, Some(1))])
        .keys("timeout_ms: 20000\nidle_timeout_ms: 300");
    let router = ModelRouter::new(&config(&[spec], &[("m", 2)], 8, 10_000));
    let mut broke = 0;
    for i in 0..16 {
        let (g, b) = (requests(&good), requests(&breaks));
        let (o, seen) = ask(&router, turn("c", &format!("t{i}"))).await;
        if requests(&breaks) > b {
            broke += 1;
            assert!(!seen.is_empty(), "the broken replica sent a first token");
            assert!(matches!(o, TurnOutcome::Failed { .. }), "{o:?}");
            assert_eq!(requests(&good), g, "no retry after the first token");
        } else {
            assert_eq!(answer_text(&o), format!("echo: t{i}"));
        }
    }
    assert!(
        broke > 0,
        "the draw never picked the stalling replica in 16 turns"
    );
    let report = &router.reports()[0];
    assert_eq!(report.replica_retries, 0);
    assert_eq!(
        report.replicas[1].failures, 0,
        "a stall after the first token is the answer's, not the replica's fault"
    );

    // Both replicas silent; the first-token budget (900 ms) leaves 100 ms of a 1000 ms
    // turn, under a quarter of it: no second replica is asked.
    let silent_a = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let silent_b = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let spec = ModelSpec::new("m", "unused")
        .replicas(&[(&silent_a.base_url, None), (&silent_b.base_url, None)])
        .keys("timeout_ms: 1000\nfirst_token_timeout_ms: 900");
    let router = ModelRouter::new(&config(&[spec], &[("m", 2)], 8, 10_000));
    let (o, _) = ask(&router, turn("c", "late")).await;
    let (_, timed_out) = failed_reason(&o);
    assert!(timed_out, "{o:?}");
    assert_eq!(
        requests(&silent_a) + requests(&silent_b),
        1,
        "no retry without time left"
    );
    assert_eq!(router.reports()[0].replica_retries, 0);
}
