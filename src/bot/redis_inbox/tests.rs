//! The inbox scripts against a real redis-server on loopback.

use std::time::Duration;

use clawdbot_testkit::redis_server::RedisServer;

use super::scripts::{self, Marker};
use crate::config::{RedisConfig, Secret};
use crate::state::redis::RedisState;

const WINDOW_MS: u64 = 60_000;

async fn replica(server: &RedisServer, id: &str) -> RedisState {
    RedisState::connect(&RedisConfig {
        url: Secret::new(server.url()),
        key_prefix: "t".into(),
        replica_id: Some(id.into()),
        lease_ms: 1_000,
    })
    .await
    .expect("connect")
}

async fn admit(r: &RedisState, id: &str, conv: &str) -> Option<u64> {
    scripts::admit(r, id, conv, "{}", WINDOW_MS)
        .await
        .expect("admit")
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn intake_dedupes_and_numbers_each_conversation_without_gaps() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    assert_eq!(admit(&r, "m1", "c").await, Some(1));
    assert_eq!(admit(&r, "m1", "c").await, None, "a duplicate is refused");
    assert_eq!(admit(&r, "m2", "c").await, Some(2));
    assert_eq!(
        admit(&r, "m3", "d").await,
        Some(1),
        "numbers are per conversation"
    );
    assert_eq!(server.cli(&["XLEN", "t:inbox"]).trim(), "3");
    // XADD fails (the stream key holds a string): the number and the dedupe key are given
    // back, so the retry of the same message gets the next number and no gap is left.
    server.cli(&["RENAME", "t:inbox", "t:saved"]);
    server.cli(&["SET", "t:inbox", "not a stream"]);
    assert!(scripts::admit(&r, "m4", "c", "{}", WINDOW_MS)
        .await
        .is_err());
    server.cli(&["DEL", "t:inbox"]);
    assert_eq!(
        admit(&r, "m4", "c").await,
        Some(3),
        "retry after a failed XADD"
    );
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn finishing_advances_only_from_the_due_number_and_skips_numbers_finished_early() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    for id in ["m1", "m2", "m3"] {
        admit(&r, id, "c").await;
    }
    assert_eq!(scripts::next_due(&r, "c").await.unwrap(), 1);
    // Number 2 ends before its turn (told busy while it waited): recorded, not due yet.
    assert_eq!(scripts::finish(&r, "c", "0-1", 2).await.unwrap(), 1);
    // Number 1 ends: the line moves past 1 and the already finished 2.
    assert_eq!(scripts::finish(&r, "c", "0-1", 1).await.unwrap(), 3);
    // A second finish of 1 (a replica that came back) changes nothing.
    assert_eq!(scripts::finish(&r, "c", "0-1", 1).await.unwrap(), 3);
    assert_eq!(scripts::next_due(&r, "c").await.unwrap(), 3);
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn the_reply_marker_has_one_holder_until_sent_or_its_lease_ran_out() {
    let server = RedisServer::start();
    let a = replica(&server, "a").await;
    let b = replica(&server, "b").await;
    assert_eq!(scripts::take_marker(&a, "m").await.unwrap(), Marker::Mine);
    assert_eq!(scripts::take_marker(&a, "m").await.unwrap(), Marker::Mine);
    assert_eq!(scripts::take_marker(&b, "m").await.unwrap(), Marker::Held);
    scripts::mark_sent(&a, "m", WINDOW_MS).await.unwrap();
    assert_eq!(scripts::take_marker(&b, "m").await.unwrap(), Marker::Sent);
    assert_eq!(scripts::take_marker(&a, "m").await.unwrap(), Marker::Sent);
    // A holder that stops renewing (a dead replica) frees the marker after the lease,
    // on Redis's clock: a real wait.
    assert_eq!(scripts::take_marker(&a, "n").await.unwrap(), Marker::Mine);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(scripts::take_marker(&b, "n").await.unwrap(), Marker::Mine);
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn keeping_renews_only_what_this_replica_still_owns() {
    let server = RedisServer::start();
    let a = replica(&server, "a").await;
    let b = replica(&server, "b").await;
    let inbox = "t:inbox";
    server.cli(&["XGROUP", "CREATE", inbox, scripts::GROUP, "0", "MKSTREAM"]);
    admit(&a, "m", "c").await;
    let read = server.cli(&[
        "XREADGROUP",
        "GROUP",
        scripts::GROUP,
        "a",
        "COUNT",
        "1",
        "STREAMS",
        inbox,
        ">",
    ]);
    let entry = read.lines().nth(1).expect("an entry id").trim().to_string();
    assert_eq!(scripts::take_marker(&a, "m").await.unwrap(), Marker::Mine);
    assert!(scripts::keep(&a, "m", &entry).await.unwrap());
    // b takes the entry over (as XAUTOCLAIM does after a lease): a no longer owns it.
    server.cli(&["XCLAIM", inbox, scripts::GROUP, "b", "0", &entry, "JUSTID"]);
    assert!(!scripts::keep(&a, "m", &entry).await.unwrap());
    assert!(
        !scripts::keep(&b, "m", &entry).await.unwrap(),
        "b does not hold the marker"
    );
}
