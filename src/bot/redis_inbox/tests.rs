//! The inbox scripts against a real redis-server on loopback.

use std::time::Duration;

use clawdbot_testkit::redis_server::RedisServer;

use super::scripts::{self, Marker, Place, Turn};
use super::RedisInbox;
use crate::config::{RedisConfig, Secret};
use crate::dingtalk::{Inbound, InboundContent};
use crate::state::redis::RedisState;

const WINDOW_MS: u64 = 60_000;

fn config(server: &RedisServer, id: &str) -> RedisConfig {
    RedisConfig {
        url: Secret::new(server.url()),
        key_prefix: "t".into(),
        replica_id: Some(id.into()),
        lease_ms: 1_000,
    }
}

async fn replica(server: &RedisServer, id: &str) -> RedisState {
    RedisState::connect(&config(server, id))
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

/// The place of arrival number `seq` in conversation `conv`'s current record.
fn place(server: &RedisServer, conv: &str, seq: u64) -> Place {
    let epoch = server.cli(&["HGET", &format!("t:conv:{conv}"), "epoch"]);
    Place {
        epoch: epoch.trim().to_string(),
        seq,
    }
}

#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn finishing_advances_only_from_the_due_number_and_skips_numbers_finished_early() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    for id in ["m1", "m2", "m3"] {
        admit(&r, id, "c").await;
    }
    let (p1, p2, p3) = (
        place(&server, "c", 1),
        place(&server, "c", 2),
        place(&server, "c", 3),
    );
    assert_eq!(p1.epoch.len(), 16, "a record gets a random epoch");
    assert_eq!(scripts::turn(&r, "c", &p1).await.unwrap(), Turn::Due);
    assert_eq!(scripts::turn(&r, "c", &p2).await.unwrap(), Turn::Waiting);
    // Number 2 ends before its turn (told busy while it waited): recorded, not due yet.
    assert_eq!(scripts::finish(&r, "c", "0-1", &p2).await.unwrap(), Some(1));
    // Number 1 ends: the line moves past 1 and the already finished 2.
    assert_eq!(scripts::finish(&r, "c", "0-1", &p1).await.unwrap(), Some(3));
    // A second finish of 1 (a replica that came back) changes nothing.
    assert_eq!(scripts::finish(&r, "c", "0-1", &p1).await.unwrap(), Some(3));
    assert_eq!(scripts::turn(&r, "c", &p3).await.unwrap(), Turn::Due);
    assert_eq!(scripts::turn(&r, "c", &p1).await.unwrap(), Turn::Past);
}

/// Issue 12: a message told busy leaves its line before it ends (its busy reply on the
/// way): the line moves past it at once, whether it was due or still waiting; its entry
/// stays pending until it ends, and ending it then leaves the line where it is.
#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn a_message_that_left_its_line_lets_it_go_on_and_stays_pending_until_it_ends() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    for id in ["m1", "m2", "m3", "m4"] {
        admit(&r, id, "c").await;
    }
    let p: Vec<Place> = (1..=4).map(|n| place(&server, "c", n)).collect();
    let pending = || server.cli(&["XLEN", "t:inbox"]).trim().to_string();
    assert_eq!(pending(), "4");
    // Number 2 is told busy while 1 runs: it leaves, and is skipped when 1 ends.
    assert_eq!(scripts::leave_line(&r, "c", &p[1]).await.unwrap(), Some(1));
    assert_eq!(scripts::turn(&r, "c", &p[1]).await.unwrap(), Turn::Waiting);
    // The stream's entry ids, in arrival order (redis-cli prints each id, then its fields).
    let ids: Vec<String> = server
        .cli(&["XRANGE", "t:inbox", "-", "+"])
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once('-').is_some_and(|(a, b)| {
                !a.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            })
        })
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(
        scripts::finish(&r, "c", &ids[0], &p[0]).await.unwrap(),
        Some(3)
    );
    assert_eq!(pending(), "3", "only the ended message's entry went");
    // Number 3 is told busy when due: the line moves on to 4 at once.
    assert_eq!(scripts::turn(&r, "c", &p[2]).await.unwrap(), Turn::Due);
    assert_eq!(scripts::leave_line(&r, "c", &p[2]).await.unwrap(), Some(4));
    assert_eq!(scripts::turn(&r, "c", &p[3]).await.unwrap(), Turn::Due);
    // A replica taking number 3 over now finds it past: it sends nothing.
    assert_eq!(scripts::turn(&r, "c", &p[2]).await.unwrap(), Turn::Past);
    // Their busy replies went out: ending them moves nothing.
    for (i, n) in [(1usize, "m2"), (2, "m3")] {
        assert_eq!(
            scripts::finish(&r, "c", &ids[i], &p[i]).await.unwrap(),
            Some(4),
            "{n}"
        );
    }
    assert_eq!(pending(), "1");
    assert_eq!(scripts::turn(&r, "c", &p[3]).await.unwrap(), Turn::Due);
}

/// Issue 14, red team item 1: Redis loses its data while number 5 is in its turn; the
/// old number must not mark the new record's messages as done.
#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn a_turn_of_a_lost_record_never_marks_the_new_records_messages_done() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    for n in 1..=5 {
        admit(&r, &format!("old{n}"), "c").await;
    }
    for n in 1..=4 {
        let p = place(&server, "c", n);
        scripts::finish(&r, "c", "0-1", &p).await.unwrap();
    }
    let (running, waiting) = (place(&server, "c", 5), place(&server, "c", 6));
    server.cli(&["FLUSHALL"]);
    // The running turn ends after the loss: the gone record is not made again.
    assert_eq!(
        scripts::finish(&r, "c", "0-1", &running).await.unwrap(),
        None
    );
    assert_eq!(server.cli(&["EXISTS", "t:conv:c"]).trim(), "0");
    // New messages start a new record (new epoch) and wait their turn in it as usual.
    for n in 1..=3 {
        assert_eq!(admit(&r, &format!("new{n}"), "c").await, Some(n));
    }
    let new1 = place(&server, "c", 1);
    assert_ne!(
        new1.epoch, running.epoch,
        "a record made again has a new epoch"
    );
    assert_eq!(scripts::turn(&r, "c", &new1).await.unwrap(), Turn::Due);
    let new2 = place(&server, "c", 2);
    assert_eq!(scripts::turn(&r, "c", &new2).await.unwrap(), Turn::Waiting);
    // An old message finishing late into the new record leaves it alone too.
    assert_eq!(
        scripts::finish(&r, "c", "0-1", &running).await.unwrap(),
        None
    );
    assert_eq!(scripts::turn(&r, "c", &new1).await.unwrap(), Turn::Due);
    // An old message still waiting has no place in the new line: answered, not dropped.
    assert_eq!(scripts::turn(&r, "c", &waiting).await.unwrap(), Turn::Lost);
    assert_eq!(scripts::turn(&r, "gone", &new1).await.unwrap(), Turn::Lost);
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

/// Issue 14 item 2: a full Redis (`maxmemory` + `noeviction`) answers but refuses every
/// intake: the inbox says so, named `OOM`, until an intake succeeds again.
#[tokio::test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
async fn a_full_redis_shows_as_a_failing_intake_named_oom_until_one_succeeds() {
    let server = RedisServer::start();
    let r = replica(&server, "a").await;
    let inbox = RedisInbox::open(r, &config(&server, "a"), Duration::from_millis(WINDOW_MS))
        .await
        .expect("open");
    let msg = |id: &str| Inbound {
        msg_id: id.into(),
        conversation_id: "c".into(),
        conversation_kind: crate::config::ConversationKind::Group,
        conversation_title: None,
        sender_id: "u".into(),
        sender_staff_id: None,
        sender_nick: "u".into(),
        content: InboundContent::Text("hi".into()),
        session_webhook: None,
        session_webhook_expires_ms: None,
        received_at_ms: 0,
        read_at: None,
        durable: Default::default(),
    };
    assert_eq!(inbox.intake_failing(), None);
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    assert!(
        inbox.admit(&msg("m1")).await.is_err(),
        "a full Redis takes nothing"
    );
    assert_eq!(inbox.intake_failing().as_deref(), Some("OOM"));
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    inbox.admit(&msg("m1")).await.expect("room again");
    assert_eq!(inbox.intake_failing(), None, "an intake succeeded again");
}
