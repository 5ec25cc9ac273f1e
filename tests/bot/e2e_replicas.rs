//! Several bot replicas sharing one Redis (`state.backend: redis`) and one simulator
//! that pushes each message to one of the live connections at random: the real binary,
//! a real redis-server and the real simulator, all on loopback.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig};
use clawdbot_testkit::redis_server::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::config::{DingTalkSpec, TestConfig};
use crate::support::stack::{Stack, CLIENT_ID, CLIENT_SECRET};
use crate::support::{free_port, wait_until, Run};

/// The lease of the replicas here: a dead replica's messages are taken over after it.
const LEASE_MS: u64 = 2_000;

/// Writes replica `n`'s config (its own replica id, plus `extra` sections) and starts it
/// as daemon `bot{n}`.
fn start_replica(stack: &Stack, redis: &RedisServer, n: usize, extra: &str) -> PathBuf {
    let (path, r) = try_start_replica(stack, redis, &format!("bot{n}"), n, extra);
    assert_eq!(r.code, 0, "{r:?}");
    path
}

/// Starts daemon `name` with replica id `r{id}`; its config path and the start's outcome.
fn try_start_replica(
    stack: &Stack,
    redis: &RedisServer,
    name: &str,
    id: usize,
    extra: &str,
) -> (PathBuf, Run) {
    let config = replica_config(stack, redis, id).section(extra);
    let path = stack.home.write(&format!("{name}.yaml"), &config.render());
    let r = stack.home.start_daemon(name, &path);
    (path, r)
}

/// Replica `r{id}`'s config: the fake model at limit 4 behind a deep queue, DingTalk's send
/// rates and the user rate limit out of the way, the state in `redis`.
fn replica_config(stack: &Stack, redis: &RedisServer, id: usize) -> TestConfig {
    stack
        .bot_config(4, 30_000)
        .queue(1_000, 120_000)
        .dingtalk(
            DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &stack.sim_url)
                .with("send_rate:\n  per_robot: 1000\n  per_conversation: 1000\n"),
        )
        .section("access:\n  user_rate_limit: 0\n")
        .section(&format!(
            "state:\n  backend: redis\n  redis:\n    url: \"{}\"\n    replica_id: r{id}\n    lease_ms: {LEASE_MS}\n",
            redis.url()
        ))
}

fn status(stack: &Stack, n: usize) -> Value {
    stack
        .home
        .run(&["--json", "daemon", "status", "--name", &format!("bot{n}")])
        .json()
}

/// GET `path` of the simulator's admin API.
fn sim_get(stack: &Stack, path: &str) -> Value {
    stack
        .rt
        .block_on(stack.sim.get(path))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The user messages of a chat request, in order.
fn user_messages(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .collect()
}

fn last_user(body: &Value) -> Option<String> {
    user_messages(body).pop()
}

/// What the outbox says per injected text (`c{conversation}-{n}`, echoed back).
#[derive(Default)]
struct Tally {
    replies: HashMap<String, usize>,
    /// When each text's first reply reached the simulator (its clock, Unix us).
    first_us: HashMap<String, u64>,
    /// Each conversation's first replies as the indices `n`, in outbox order.
    order: BTreeMap<String, Vec<usize>>,
}

fn tally(outbox: &[Value]) -> Tally {
    let mut t = Tally::default();
    for e in outbox {
        let text = e["text"].as_str().unwrap_or_default();
        let Some(asked) = text.strip_prefix("echo: ").and_then(|a| a.lines().next()) else {
            continue;
        };
        let count = t.replies.entry(asked.to_string()).or_insert(0);
        *count += 1;
        if *count > 1 {
            continue;
        }
        t.first_us
            .insert(asked.to_string(), e["at_us"].as_u64().unwrap_or(0));
        if let Some((conv, n)) = asked.rsplit_once('-') {
            t.order
                .entry(conv.to_string())
                .or_default()
                .push(n.parse().unwrap_or(usize::MAX));
        }
    }
    t
}

/// The texts of the entries `consumer` holds (delivered, not acked).
fn texts_held_by(redis: &RedisServer, consumer: &str) -> HashSet<String> {
    let listing = redis.cli(&[
        "XPENDING",
        "clawdbot:inbox",
        "bot",
        "-",
        "+",
        "10000",
        consumer,
    ]);
    let lines: Vec<&str> = listing.lines().map(str::trim).collect();
    let ids = lines
        .iter()
        .zip(lines.iter().skip(1))
        .filter(|(_, owner)| **owner == consumer)
        .map(|(id, _)| *id);
    let mut texts = HashSet::new();
    for id in ids {
        let entry = redis.cli(&["XRANGE", "clawdbot:inbox", id, id]);
        let mut fields = entry.lines();
        while let Some(f) = fields.next() {
            if f.trim() != "msg" {
                continue;
            }
            let msg: Value = fields
                .next()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            if let Some(t) = msg["content"]["Text"].as_str() {
                texts.insert(t.to_string());
            }
        }
    }
    texts
}

/// The simulator's record of message `msg_id` (deliveries, ACK).
fn sim_message(stack: &Stack, msg_id: &str) -> Value {
    sim_get(stack, "/_sim/messages")["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["msgId"] == msg_id)
        .cloned()
        .unwrap_or_default()
}

/// GET `url`: status code (0 when unreachable) and body.
fn http_get(stack: &Stack, url: &str) -> (u16, String) {
    stack.rt.block_on(async {
        match reqwest::get(url).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
}

/// Polls `url` (a `/readyz`) until it answers `want`, at most 30 s; code and body.
fn wait_readyz(stack: &Stack, url: &str, want: u16) -> (u16, String) {
    let mut last = (0, String::new());
    let reached = wait_until(Duration::from_secs(30), || {
        last = http_get(stack, url);
        last.0 == want
    });
    assert!(reached, "{url} never answered {want}; last: {last:?}");
    last
}

/// Waits (at most 30 s) until the simulator saw message `msg_id` ACKed.
fn wait_acked(stack: &Stack, msg_id: &str) {
    let acked = wait_until(Duration::from_secs(30), || {
        sim_message(stack, msg_id)["acked"] == true
    });
    assert!(acked, "message {msg_id} never ACKed");
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// 3 replicas, 300 messages over 20 conversations (4 of them flooding), one replica
/// killed with SIGKILL after a third while it holds a message, another stopped and started again at half, and Redis
/// restarted after two thirds: every message answered exactly once, each conversation in
/// order, the killed replica's messages taken over; then Redis down and back.
#[test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
fn three_replicas_answer_every_message_once_in_order_through_a_kill_and_a_redis_restart() {
    let mut redis = RedisServer::start();
    let fake = FakeConfig::from(FakeBehavior {
        latency_ms: 20,
        ..Default::default()
    });
    let stack = Stack::new(fake, &["--redeliver-unacked-ms", "1000"]);
    let ops_port = free_port();
    let readyz = format!("http://127.0.0.1:{ops_port}/readyz");
    for n in 1..=3 {
        let ops = format!("ops:\n  listen: \"127.0.0.1:{ops_port}\"\n");
        start_replica(&stack, &redis, n, if n == 1 { &ops } else { "" });
    }
    assert!(
        wait_until(Duration::from_secs(30), || stack.live_connections() == 3),
        "three replicas connected"
    );
    // A fourth daemon configured with r1's id is refused, naming the id; r1 runs on.
    let (_, clash) = try_start_replica(&stack, &redis, "bot4", 1, "");
    assert_ne!(clash.code, 0, "{clash:?}");
    assert!(
        format!("{}{}", clash.stdout, clash.stderr).contains("replica id \"r1\" is in use"),
        "{clash:?}"
    );
    let st = status(&stack, 1);
    assert_eq!(st["shared_state"]["backend"], "redis", "{st}");
    assert_eq!(st["shared_state"]["replica_id"], "r1", "{st}");
    assert_eq!(
        st["shared_state"]["redis_server"],
        format!("127.0.0.1:{}", redis.port()),
        "{st}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || status(&stack, 1)
            ["shared_state"]["alive_replicas"]
            == 3),
        "status counts the three replicas"
    );
    let human = stack
        .home
        .run(&["daemon", "status", "--name", "bot1"])
        .stdout;
    let line = format!(
        "state: redis at 127.0.0.1:{} (ok), replica r1, 3 replicas alive",
        redis.port()
    );
    assert!(human.contains(&line), "{human}");
    let metrics = http_get(&stack, &format!("http://127.0.0.1:{ops_port}/metrics")).1;
    assert!(
        metrics.lines().any(|l| l == "clawdbot_alive_replicas 3"),
        "{metrics}"
    );

    // Memory is shared: one conversation's messages, one at a time, land on random
    // replicas, and each request to the model carries every earlier exchange.
    let asked = 5;
    for k in 0..asked {
        stack.inject_group("mem", &format!("mem-{k}"));
        stack.wait_outbox(k + 1, Duration::from_secs(30));
    }
    let recent = stack.fake_stats().recent;
    for k in 0..asked {
        let want: Vec<String> = (0..=k).map(|j| format!("mem-{j}")).collect();
        let request = recent
            .iter()
            .find(|r| last_user(&r.body).as_deref() == Some(&want[k]))
            .unwrap_or_else(|| panic!("no request for mem-{k}"));
        assert_eq!(user_messages(&request.body), want, "history of mem-{k}");
    }
    let memory_replies = asked;

    let total = 300;
    let mut per_conversation = [0usize; 20];
    let mut last_of: Vec<Option<String>> = vec![None; 20];
    let victim = status(&stack, 3)["pid"].as_i64().expect("pid") as i32;
    let mut victim_pid = None;
    let mut held_at_kill = HashSet::new();
    let mut kill_us = 0;
    let started = Instant::now();
    for i in 0..total {
        // Every other message goes to one of 4 flooding conversations.
        let conv = if i % 2 == 0 {
            i / 2 % 4
        } else {
            4 + i / 2 % 16
        };
        let n = per_conversation[conv];
        per_conversation[conv] += 1;
        // Arrival order is the order the replicas accepted the messages in: the next
        // message of a conversation goes out once its previous one was ACKed (accepted),
        // which is at once unless a kill or the Redis restart held it up.
        if let Some(previous) = &last_of[conv] {
            wait_acked(&stack, previous);
        }
        last_of[conv] = Some(stack.inject_group(&format!("c{conv}"), &format!("c{conv}-{n}")));
        // Replica 3 is killed from a third of the way on, at the first moment it holds a
        // message (a slow or busy machine may see it idle at any one moment), and at the
        // last message before the rolling restart at the latest.
        let kill_due = victim_pid.is_none()
            && i >= total / 3
            && (i + 1 == total / 2 || !texts_held_by(&redis, "r3").is_empty());
        if kill_due {
            kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill -9 replica 3");
            kill_us = now_us();
            // Read before the lease passes: still the dead replica's.
            held_at_kill = texts_held_by(&redis, "r3");
            victim_pid = Some(victim);
        }
        if i == total / 2 {
            // A rolling restart of replica 2: a clean stop leaves nothing to answer twice.
            let stop = stack
                .home
                .run(&["daemon", "stop", "--name", "bot2", "--timeout", "20"]);
            assert_eq!(stop.code, 0, "{stop:?}");
            // Its clean stop removed it from the live replicas at once (issue 14 item 5).
            assert_eq!(
                redis.cli(&["ZSCORE", "clawdbot:replicas", "r2"]).trim(),
                "",
                "a cleanly stopped replica is still counted alive"
            );
            start_replica(&stack, &redis, 2, "");
        }
        if i == 2 * total / 3 {
            redis.restart();
        }
    }
    assert!(victim_pid.is_some());
    assert!(
        !held_at_kill.is_empty(),
        "the killed replica held no message"
    );
    // The killed replica's messages are taken over after the lease and answered: all
    // within 30 s of the flood's end (a generous bound: it takes a few seconds).
    let out = stack.wait_outbox(memory_replies + total, Duration::from_secs(30));
    let took = started.elapsed();
    // Settled: nothing pending in the group and no turn at the model, so any duplicate
    // reply would already be in the outbox.
    let settled = wait_until(Duration::from_secs(60), || {
        let pending = redis.cli(&["XPENDING", "clawdbot:inbox", "bot"]);
        pending.lines().next().map(str::trim) == Some("0") && stack.fake_stats().in_flight == 0
    });
    assert!(
        settled,
        "{}",
        redis.cli(&["XPENDING", "clawdbot:inbox", "bot"])
    );
    let out = if settled { stack.outbox() } else { out };
    let t = tally(&out);
    // The one window no replica can close: DingTalk took a reply and its replica died
    // before Redis recorded it as sent; the message is then answered again by the replica
    // that takes it over. Excused only for a message the killed replica held at the kill
    // whose first reply came before the kill; counted and shown.
    let mut excused = Vec::new();
    let mut twice = Vec::new();
    for (text, n) in &t.replies {
        if *n < 2 {
            continue;
        }
        let first = t.first_us.get(text).copied().unwrap_or(u64::MAX);
        if *n == 2 && held_at_kill.contains(text) && first <= kill_us {
            excused.push((text.clone(), kill_us - first));
        } else {
            twice.push((text.clone(), *n));
        }
    }
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    assert_eq!(
        t.replies.len(),
        memory_replies + total,
        "every message answered ({took:?})"
    );
    for (conv, seen) in &t.order {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, &sorted, "replies of {conv} out of order");
    }
    for n in 1..=2 {
        let st = status(&stack, n);
        assert_eq!(
            st["shared_state"]["redis_ok"], true,
            "replica {n} recovered: {st}"
        );
    }

    // Redis down: status and /readyz say so, and a message is not ACKed (the simulator
    // delivers it again); Redis back: ready again and the message answered, no restart.
    redis.kill();
    let (_, body) = wait_readyz(&stack, &readyz, 503);
    assert!(
        body.contains(&format!("redis at 127.0.0.1:{}", redis.port())),
        "{body}"
    );
    assert_eq!(status(&stack, 1)["shared_state"]["redis_ok"], false);
    let health = stack.home.run(&["--json", "healthcheck", "--name", "bot1"]);
    assert_eq!(health.code, 1, "the daemon's healthcheck fails: {health:?}");
    let redis_check = crate::support::check(&health.json(), "redis").clone();
    assert_eq!(redis_check["status"], "fail", "{health:?}");
    assert!(
        redis_check["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("127.0.0.1:{}", redis.port()))),
        "{health:?}"
    );
    let during = stack.inject_group("c0", "down-0");
    let redelivered = wait_until(Duration::from_secs(30), || {
        let m = sim_message(&stack, &during);
        m["deliveries"].as_array().map_or(0, Vec::len) >= 2
    });
    assert!(
        redelivered,
        "the simulator never delivered the message again"
    );
    assert_eq!(
        sim_message(&stack, &during)["acked"],
        false,
        "ACKed while Redis was down"
    );
    redis.start_again();
    wait_readyz(&stack, &readyz, 200);
    wait_acked(&stack, &during);
    let answered = wait_until(Duration::from_secs(30), || {
        tally(&stack.outbox()).replies.get("down-0") == Some(&1)
    });
    assert!(
        answered,
        "the message sent while Redis was down was never answered"
    );

    // A full Redis (maxmemory + noeviction) still answers but refuses every intake: the
    // replica that got the message says so, naming OOM, and does not ACK it; room again:
    // it is taken and answered (issue 14 item 2).
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let full = stack.inject_group("c0", "full-0");
    let mut states = Vec::new();
    let named = wait_until(Duration::from_secs(30), || {
        states = (1..=2)
            .map(|n| status(&stack, n)["shared_state"].clone())
            .collect();
        states
            .iter()
            .any(|s| s["intake_error"] == "OOM" && s["redis_ok"] == false)
    });
    assert!(named, "no replica showed the refused intake: {states:?}");
    assert_eq!(
        sim_message(&stack, &full)["acked"],
        false,
        "ACKed into a full Redis"
    );
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_acked(&stack, &full);
    let answered = wait_until(Duration::from_secs(30), || {
        tally(&stack.outbox()).replies.get("full-0") == Some(&1)
    });
    assert!(
        answered,
        "the message refused by a full Redis was never answered"
    );

    let slow = |ms| {
        FakeConfig::from(FakeBehavior {
            latency_ms: ms,
            ..Default::default()
        })
    };

    // Redis loses its data (FLUSHALL) while a conversation's 5th message is in the model:
    // that turn ends without writing its old number into the conversation's new record,
    // so the 7 messages sent after the loss are all answered, in order; before the fix the
    // new 5th was taken as done and dropped (issue 14 item 1).
    for k in 0..4 {
        let id = stack.inject_group("lost", &format!("lost-{k}"));
        wait_acked(&stack, &id);
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            (0..4).all(|k| {
                tally(&stack.outbox())
                    .replies
                    .contains_key(&format!("lost-{k}"))
            })
        }),
        "the first 4 messages were not answered"
    );
    stack.fake.state.set_config(slow(1_500));
    let fifth = stack.inject_group("lost", "lost-4");
    wait_acked(&stack, &fifth);
    assert!(
        wait_until(Duration::from_secs(30), || {
            (1..=2).any(|n| status(&stack, n)["models"][0]["in_flight"].as_u64() > Some(0))
        }),
        "the 5th message never reached the model"
    );
    redis.cli(&["FLUSHALL"]);
    // Slower than what is left of the 5th's turn, so it ends while the new line runs.
    stack.fake.state.set_config(slow(500));
    for k in 5..12 {
        let id = stack.inject_group("lost", &format!("lost-{k}"));
        wait_acked(&stack, &id);
    }
    let mut missing = Vec::new();
    let all = wait_until(Duration::from_secs(30), || {
        let t = tally(&stack.outbox());
        missing = (0..12)
            .map(|k| format!("lost-{k}"))
            .filter(|text| !t.replies.contains_key(text))
            .collect();
        missing.is_empty()
    });
    assert!(
        all,
        "messages after the data loss got no reply: {missing:?}"
    );
    stack.fake.state.set_config(slow(20));

    // A replica that stalls past the lease (SIGSTOP) has its messages taken over and
    // answered by the others; once it resumes it sends nothing for them (its reply markers
    // are gone), and after its clean stop (which waits for its turns) nothing was answered
    // twice.
    // Slow answers while the replica is stopped, so it is stopped inside a model call.
    stack.fake.state.set_config(slow(1_500));
    let mut last_of: Vec<Option<String>> = vec![None; 3];
    for k in 0..60 {
        if let Some(previous) = &last_of[k % 3] {
            wait_acked(&stack, previous);
        }
        let conv = 1 + k % 3;
        let text = format!("s{conv}-{}", k / 3);
        last_of[k % 3] = Some(stack.inject_group(&format!("s{conv}"), &text));
    }
    for id in last_of.iter().flatten() {
        wait_acked(&stack, id);
    }
    let r2 = Pid::from_raw(status(&stack, 2)["pid"].as_i64().expect("pid") as i32);
    assert!(
        wait_until(Duration::from_secs(30), || {
            status(&stack, 2)["models"][0]["in_flight"].as_u64() > Some(0)
        }),
        "replica 2 never asked the model"
    );
    kill(r2, Signal::SIGSTOP).expect("SIGSTOP replica 2");
    stack.fake.state.set_config(slow(20));
    let held_at_stall = texts_held_by(&redis, "r2");
    assert!(
        !held_at_stall.is_empty(),
        "the stalled replica held no message"
    );
    let all_answered = wait_until(Duration::from_secs(30), || {
        let t = tally(&stack.outbox());
        (0..60).all(|k| t.replies.contains_key(&format!("s{}-{}", 1 + k % 3, k / 3)))
    });
    kill(r2, Signal::SIGCONT).expect("SIGCONT replica 2");
    assert!(
        all_answered,
        "the stalled replica's messages were not taken over"
    );
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot2", "--timeout", "30"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let t = tally(&stack.outbox());
    let twice: Vec<_> = t
        .replies
        .iter()
        .filter(|(text, n)| text.starts_with('s') && **n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "answered twice after the stalled replica resumed: {twice:?}"
    );
    for (conv, seen) in t.order.iter().filter(|(c, _)| c.starts_with('s')) {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, &sorted, "replies of {conv} out of order");
    }
    eprintln!(
        "{total} messages over 3 replicas (one killed holding {}, Redis restarted) in {took:?}; excused (sent, then killed before marked): {excused:?}; stalled replica held {}",
        held_at_kill.len(),
        held_at_stall.len()
    );
}

/// Issue 12, with the shared inbox: a conversation's line on a replica holds at most
/// `limits.queue.max_waiting` turns; one more is told busy at once, and that message ends
/// in Redis like any other: every message gets exactly one reply, the waiting turn is
/// answered after the first, and the replica holds nothing pending afterwards.
#[test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
fn a_full_line_on_a_replica_is_told_busy_once_and_leaves_nothing_pending() {
    let redis = RedisServer::start();
    let fake = FakeConfig::from(FakeBehavior {
        latency_ms: 1500,
        ..Default::default()
    });
    let stack = Stack::new(fake, &[]);
    let config = replica_config(&stack, &redis, 1).queue(1, 20_000);
    let path = stack.home.write("bot1.yaml", &config.render());
    let r = stack.home.start_daemon("bot1", &path);
    assert_eq!(r.code, 0, "{r:?}");
    // Past the start-up send window, so a busy reply goes out when decided.
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..6 {
        stack.inject_group("cidLine==", &format!("line-{i}"));
        // Taken in before the next is sent, so the replica sees them in this order.
        assert!(
            wait_until(Duration::from_secs(10), || status(&stack, 1)["channel"]
                ["messages_in"]
                == i + 1),
            "message {i} was not taken in"
        );
    }
    let out = stack.wait_outbox(6, Duration::from_secs(30));
    let busy = out
        .iter()
        .filter(|e| {
            e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("I'm busy"))
        })
        .count();
    assert_eq!(busy, 4, "{out:?}");
    let t = tally(&out);
    assert_eq!(t.order.get("line"), Some(&vec![0, 1]), "{out:?}");
    assert!(t.replies.values().all(|n| *n == 1), "{out:?}");
    let st = status(&stack, 1);
    assert_eq!(st["busy_replies"]["line_full"], 4, "{st}");
    assert!(
        wait_until(Duration::from_secs(10), || texts_held_by(&redis, "r1")
            .is_empty()),
        "the replica still holds {:?}",
        texts_held_by(&redis, "r1")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stack.outbox().len(), 6, "a message got a second reply");
    stack.home.run(&["daemon", "stop", "--name", "bot1"]);
}

/// Issue 12, with the shared inbox and the send rate shared through Redis: a group
/// flooded past `max_wait_ms` keeps getting answers (see
/// `e2e_bot::answers_late_in_a_long_flood`): a message told busy leaves the shared line
/// before its busy reply is sent, and busy replies yield to the replica's answers in the
/// shared send rate. Each busy message still ends in Redis once its reply went out.
#[test]
#[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
fn a_group_flooded_past_its_wait_keeps_getting_answers_with_the_shared_state() {
    let redis = RedisServer::start();
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            latency_ms: 200,
            ..Default::default()
        }),
        &[],
    );
    let config = crate::e2e_bot::long_flood_config(&stack, replica_config(&stack, &redis, 1));
    let path = stack.home.write("bot1.yaml", &config.render());
    let r = stack.home.start_daemon("bot1", &path);
    assert_eq!(r.code, 0, "{r:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let answers_late = crate::e2e_bot::answers_late_in_a_long_flood(&stack, "cidSharedFlood==");
    assert!(
        answers_late >= 6,
        "{answers_late} answers in the flood's second half: {}",
        status(&stack, 1)
    );
    assert!(
        wait_until(Duration::from_secs(20), || texts_held_by(&redis, "r1")
            .is_empty()),
        "the replica still holds {:?}",
        texts_held_by(&redis, "r1")
    );
}
