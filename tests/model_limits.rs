//! The per-model limiter over real HTTP: never above the limit, fair across
//! conversations, bounded queue with immediate Busy. (Order within a conversation is the
//! bot's turn-order tickets', tested in `src/bot/order.rs` and `tests/e2e_bot.rs`.)

mod model_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot::model::{ModelRouter, TurnOutcome};
use clawdbot_testkit::fake_model::FakeBehavior;
use model_support::*;

fn slow(latency_ms: u64) -> FakeBehavior {
    FakeBehavior {
        latency_ms,
        ..FakeBehavior::default()
    }
}

/// Spawns one turn; its outcome and completion index go to `done`.
fn spawn_turn(
    router: &ModelRouter,
    lane: &str,
    text: &str,
    done: &Arc<Mutex<Vec<(String, TurnOutcome)>>>,
) -> tokio::task::JoinHandle<()> {
    let (router, t, done, label) = (
        router.clone(),
        turn(lane, text),
        done.clone(),
        text.to_string(),
    );
    tokio::spawn(async move {
        let outcome = answer(&router, t, &mut |_: &str| {}).await;
        done.lock().unwrap().push((label, outcome));
    })
}

/// Waits until the limiter holds `n` turns (in flight + queued), so spawn order is arrival order.
async fn wait_admitted(router: &ModelRouter, n: usize) {
    let ok = wait_until(Duration::from_secs(5), || {
        let r = &router.reports()[0];
        r.in_flight
            + r.queued
            + r.served as usize
            + r.busy_rejections as usize
            + r.failures as usize
            >= n
    })
    .await;
    assert!(ok, "turn {n} never reached the limiter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_never_exceeds_the_limit() {
    let srv = fake(slow(20)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 20000")],
        &[("m", 2)],
        64,
        15000,
    ));
    let done = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..50)
        .map(|i| spawn_turn(&router, &format!("lane{}", i % 10), &format!("t{i}"), &done))
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("flood finishes")
            .expect("task");
    }
    let stats = srv.state.stats();
    assert!(
        stats.max_in_flight <= 2,
        "server saw {} at once",
        stats.max_in_flight
    );
    let r = &router.reports()[0];
    assert!(
        r.peak_in_flight <= 2 && r.peak_in_flight >= 1,
        "peak {}",
        r.peak_in_flight
    );
    assert_eq!(r.served, 50);
    assert_eq!((r.in_flight, r.queued), (0, 0));
    assert!(r.p50_ms.is_some() && r.p95_ms >= r.p50_ms);
    assert!(done
        .lock()
        .unwrap()
        .iter()
        .all(|(_, o)| matches!(o, TurnOutcome::Answer { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_lane_is_not_starved_by_a_flooding_one() {
    let srv = fake(slow(60)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 20000")],
        &[("m", 2)],
        64,
        15000,
    ));
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // 30 turns from one group at once (more than the bot would let through), then a quiet one.
    for i in 0..30 {
        tasks.push(spawn_turn(&router, "flood", &format!("flood{i}"), &done));
    }
    wait_admitted(&router, 30).await;
    let started = Instant::now();
    tasks.push(spawn_turn(&router, "quiet", "quiet", &done));
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("finishes")
            .expect("task");
    }
    let order: Vec<String> = done
        .lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.clone())
        .collect();
    let quiet_at = order
        .iter()
        .position(|l| l == "quiet")
        .expect("quiet answered");
    assert!(
        quiet_at <= 3,
        "quiet answered after {quiet_at} flood turns: {order:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_busy_at_once_and_wait_expiry_is_busy() {
    let srv = fake(slow(1500)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 10000")],
        &[("m", 1)],
        1,
        400,
    ));
    let done = Arc::new(Mutex::new(Vec::new()));
    let first = spawn_turn(&router, "a", "first", &done);
    wait_admitted(&router, 1).await;
    let waiting_started = Instant::now();
    let second = spawn_turn(&router, "b", "second", &done);
    wait_admitted(&router, 2).await;
    let t = Instant::now();
    let (o, _) = ask(&router, turn("c", "third")).await;
    assert_eq!(o, TurnOutcome::Busy);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "queue full is immediate: {:?}",
        t.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("second ends")
        .expect("task");
    let waited = waiting_started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(400) + SLACK,
        "waited {waited:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("first ends")
        .expect("task");
    let outcomes = done.lock().unwrap().clone();
    assert!(outcomes
        .iter()
        .any(|(l, o)| l == "second" && *o == TurnOutcome::Busy));
    assert!(outcomes
        .iter()
        .any(|(l, o)| l == "first" && matches!(o, TurnOutcome::Answer { .. })));
    let r = &router.reports()[0];
    assert_eq!(
        (r.busy_rejections, r.served, r.queued, r.in_flight),
        (2, 1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_do_not_leak_slots() {
    let srv = fake(slow(300)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 10000")],
        &[("m", 1)],
        8,
        5000,
    ));
    let done = Arc::new(Mutex::new(Vec::new()));
    let first = spawn_turn(&router, "a", "first", &done);
    wait_admitted(&router, 1).await;
    let waiter = spawn_turn(&router, "b", "cancelled", &done);
    wait_admitted(&router, 2).await;
    waiter.abort();
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("first ends")
        .expect("task");
    assert!(
        wait_until(Duration::from_secs(5), || router.reports()[0].in_flight
            == 0)
        .await
    );
    let (o, _) = ask(&router, turn("c", "later")).await;
    assert_eq!(answer_text(&o), "echo: later");
    assert_eq!(router.reports()[0].queued, 0);
}
