//! The per-model limiter over real HTTP: never above the limit, fair across
//! conversations, bounded queue with immediate Busy. (Order within a conversation is the
//! bot's turn-order tickets', tested in `src/bot/order.rs` and `tests/bot/e2e_bot.rs`.)
//!
//! Orders are read from [`AnswerOrder`] (noted while a turn holds its slot) and "at once"
//! is shown by what else was still true when the answer came (the slot still held), never
//! by a wall-clock bound: the exact timings are tested on paused time in
//! `src/model/limiter.rs`.

use crate::model_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot::model::{ModelRouter, TurnOutcome};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeMode};
use model_support::*;

fn slow(latency_ms: u64) -> FakeBehavior {
    FakeBehavior {
        latency_ms,
        ..FakeBehavior::default()
    }
}

/// The turns of one test: their outcomes, and the order they were answered in.
#[derive(Clone, Default)]
struct Turns {
    done: Arc<Mutex<Vec<(String, TurnOutcome)>>>,
    answered: AnswerOrder,
}

impl Turns {
    /// Spawns one turn labelled `text`.
    fn spawn(
        &self,
        router: &ModelRouter,
        conversation: &str,
        text: &str,
    ) -> tokio::task::JoinHandle<()> {
        let (router, asked, turns, label) = (
            router.clone(),
            turn(conversation, text),
            self.clone(),
            text.to_string(),
        );
        tokio::spawn(async move {
            let outcome = router
                .answer_with(&asked.turn, &mut turns.answered.hooks(&label, &asked))
                .await;
            turns.done.lock().unwrap().push((label, outcome));
        })
    }

    fn outcomes(&self) -> Vec<(String, TurnOutcome)> {
        self.done.lock().unwrap().clone()
    }
}

/// Waits for every task, each for at most 60 s (a hang, not a slow machine).
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("turn finishes")
            .expect("task");
    }
}

/// Waits until the limiter holds `n` turns (in flight + queued), so spawn order is arrival order.
async fn wait_admitted(router: &ModelRouter, n: usize) {
    let ok = wait_until(Duration::from_secs(30), || {
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
        &[model("m", &srv.base_url, "timeout_ms: 60000")],
        &[("m", 2)],
        64,
        60_000,
    ));
    let turns = Turns::default();
    let tasks: Vec<_> = (0..50)
        .map(|i| turns.spawn(&router, &format!("lane{}", i % 10), &format!("t{i}")))
        .collect();
    join_all(tasks).await;
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
    assert!(turns
        .outcomes()
        .iter()
        .all(|(_, o)| matches!(o, TurnOutcome::Answer { .. })));
}

/// One slot, a conversation with 30 turns queued (more than the bot would let through),
/// then one turn of a quiet conversation: each grant sends the flooding conversation to
/// the back of the line, so the quiet turn is answered after at most the flood turn
/// running and the one already granted next when it arrived (a plain FIFO queue would put
/// it behind all 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_lane_is_not_starved_by_a_flooding_one() {
    let srv = fake(slow(20)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 60000")],
        &[("m", 1)],
        64,
        60_000,
    ));
    let turns = Turns::default();
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(turns.spawn(&router, "flood", &format!("flood{i}")));
    }
    wait_admitted(&router, 30).await;
    tasks.push(turns.spawn(&router, "quiet", "quiet"));
    wait_admitted(&router, 31).await;
    // Every flood turn answered before the quiet one queued is counted here (more may
    // end between the two reads, so this can only be too high, never too low).
    let answered_before = turns.answered.names().len();
    join_all(tasks).await;
    let order = turns.answered.names();
    let quiet_at = order
        .iter()
        .position(|l| l == "quiet")
        .expect("quiet answered");
    assert!(
        quiet_at <= answered_before + 2 && quiet_at < 30,
        "quiet answered after {quiet_at} flood turns ({answered_before} before it queued): {order:?}"
    );
}

/// A full queue refuses at once: the third turn is Busy while the second still waits in
/// the queue (it could only have waited for room by outlasting the second's 60 s wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_busy_at_once() {
    let srv = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 60000")],
        &[("m", 1)],
        1,
        60_000,
    ));
    let turns = Turns::default();
    let first = turns.spawn(&router, "a", "first");
    wait_admitted(&router, 1).await;
    let second = turns.spawn(&router, "b", "second");
    wait_admitted(&router, 2).await;
    let (o, _) = tokio::time::timeout(Duration::from_secs(30), ask(&router, turn("c", "third")))
        .await
        .expect("the third turn waited for room instead of being refused");
    assert_eq!(o, TurnOutcome::Busy);
    let r = &router.reports()[0];
    assert_eq!(
        (r.busy_rejections, r.in_flight, r.queued),
        (1, 1, 1),
        "refused while the first held the slot and the second waited"
    );
    assert!(!second.is_finished());
    first.abort();
    second.abort();
}

/// A waiter gives up when its queue wait (400 ms) runs out: Busy, no sooner than 400 ms,
/// and while the slot is still held (the first turn stalls with a 60 s budget), so it was
/// the expiry, not a free slot, that ended the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_queue_wait_is_busy() {
    let srv = fake(behavior(FakeMode::StallBeforeHeaders)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 60000")],
        &[("m", 1)],
        1,
        400,
    ));
    let turns = Turns::default();
    let first = turns.spawn(&router, "a", "first");
    wait_admitted(&router, 1).await;
    let t = Instant::now();
    let (o, _) = tokio::time::timeout(Duration::from_secs(30), ask(&router, turn("b", "second")))
        .await
        .expect("the expired wait ended");
    let waited = t.elapsed();
    assert_eq!(o, TurnOutcome::Busy);
    assert!(waited >= Duration::from_millis(400), "waited {waited:?}");
    let r = &router.reports()[0];
    assert_eq!(
        (r.busy_rejections, r.in_flight, r.queued),
        (1, 1, 0),
        "the first still holds the slot; nobody waits"
    );
    assert!(!first.is_finished());
    first.abort();
    assert!(
        wait_until(Duration::from_secs(30), || router.reports()[0].in_flight
            == 0)
        .await,
        "a cancelled turn gives its slot back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_do_not_leak_slots() {
    let srv = fake(slow(300)).await;
    let router = ModelRouter::new(&config(
        &[model("m", &srv.base_url, "timeout_ms: 60000")],
        &[("m", 1)],
        8,
        60_000,
    ));
    let turns = Turns::default();
    let first = turns.spawn(&router, "a", "first");
    wait_admitted(&router, 1).await;
    let waiter = turns.spawn(&router, "b", "cancelled");
    wait_admitted(&router, 2).await;
    waiter.abort();
    join_all(vec![first]).await;
    assert!(
        wait_until(Duration::from_secs(30), || router.reports()[0].in_flight
            == 0)
        .await
    );
    let (o, _) = ask(&router, turn("c", "later")).await;
    assert_eq!(answer_text(&o), "echo: later");
    assert_eq!(router.reports()[0].queued, 0);
}
