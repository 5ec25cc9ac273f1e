//! Faults end to end: a SIGKILLed daemon with turns in flight, a restarted simulator,
//! config reloads (good and bad), a config with secrets readable by others.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::stack::Stack;
use support::wait_until;

fn slow_model(ms: u64) -> FakeConfig {
    FakeConfig::from(FakeBehavior {
        latency_ms: ms,
        ..Default::default()
    })
}

fn replies_by_conversation(outbox: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in outbox {
        *counts
            .entry(
                e["conversation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn sigkill_with_turns_in_flight_loses_nothing_and_answers_once_after_restart() {
    let stack = Stack::new(slow_model(2000), &[]);
    let cfg = stack.config(4, 10_000, "");
    stack.start_bot(&cfg);
    for i in 0..3 {
        stack.inject_group(&format!("cidKill{i}=="), &format!("question {i}"));
    }
    assert!(
        wait_until(Duration::from_secs(10), || stack.fake_stats().in_flight
            >= 3),
        "turns never reached the model"
    );
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    assert!(stack.outbox().is_empty(), "answered before the kill");

    stack.start_bot(&cfg);
    stack.wait_outbox(3, Duration::from_secs(30));
    // Count once the daemon has nothing left to send: a duplicate would be in by then.
    stack.wait_settled();
    let out = stack.outbox();
    let counts = replies_by_conversation(&out);
    for i in 0..3 {
        assert_eq!(counts.get(&format!("cidKill{i}==")), Some(&1), "{out:?}");
    }
    assert!(
        out.iter()
            .all(|e| e["text"].as_str().unwrap().starts_with("echo: question")),
        "{out:?}"
    );
}

#[test]
fn after_a_restart_an_expired_session_gets_a_sorry_through_the_openapi() {
    // Session webhooks live 1.5 s here, so the message is stale by the time the bot is back.
    let stack = Stack::new(slow_model(3000), &["--session-ttl-ms", "1500"]);
    let cfg = stack.config(2, 10_000, "");
    stack.start_bot(&cfg);
    let injected = stack.inject(
        serde_json::json!({"text": "will you remember me?", "conversation_type": "group",
        "conversation_id": "cidLate==", "sender_staff_id": "0423001"}),
    );
    let expires = injected["payload"]["sessionWebhookExpiredTime"]
        .as_u64()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || stack
        .fake_stats()
        .in_flight
        >= 1));
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    assert!(wait_until(
        Duration::from_secs(30),
        || clawdbot::clock::now_ms() > expires
    ));

    stack.start_bot(&cfg);
    let out = stack.wait_outbox(1, Duration::from_secs(15));
    assert_eq!(out[0]["route"], "group_send", "{out:?}");
    assert!(
        out[0]["text"].as_str().unwrap().contains("restarted"),
        "{out:?}"
    );
}

#[test]
fn the_bot_reconnects_after_the_simulator_restarts() {
    let mut stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    stack.restart_sim();
    stack.wait_connected();
    stack.inject_group("cidAfter==", "still there?");
    let out = stack.wait_outbox(1, Duration::from_secs(15));
    assert!(out[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("echo: still there?"));
    assert!(stack.status()["channel"]["reconnects"].as_u64().unwrap() >= 1);
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "policy:\n  system_prompt: \"PROMPT-ONE\"\n");
    stack.start_bot(&cfg);
    let original = std::fs::read_to_string(&cfg).unwrap();
    let pid = Pid::from_raw(stack.bot_pid());
    let log = stack.home.log_path("bot");

    std::fs::write(&cfg, original.replace("PROMPT-ONE", "PROMPT-TWO")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("config reloaded")
    }));
    stack.inject_group("cidHup==", "which prompt?");
    stack.wait_outbox(1, Duration::from_secs(10));
    let last = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(last["messages"][0]["content"], "PROMPT-TWO");

    std::fs::write(
        &cfg,
        original
            .replace("PROMPT-ONE", "PROMPT-THREE")
            .replace("timeout_ms", "timeout_msec"),
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("config reload failed, keeping the old config")
            && text.contains("timeout_msec")
    }));
    stack.inject_group("cidHup==", "and now?");
    stack.wait_outbox(2, Duration::from_secs(10));
    let last = stack.fake_stats().recent.back().unwrap().body.clone();
    assert_eq!(
        last["messages"][0]["content"], "PROMPT-TWO",
        "bad config was applied"
    );
    assert_eq!(
        stack.home.run(&["daemon", "status", "--name", "bot"]).code,
        0
    );
    let st = stack.status();
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("reload"),
        "{st}"
    );

    // A later good reload clears the reload error from last_error.
    std::fs::write(&cfg, original.replace("PROMPT-ONE", "PROMPT-FOUR")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("config reloaded")
            .count()
            == 2
    }));
    let st = stack.status();
    assert!(st["last_error"].is_null(), "stale reload error: {st}");
}

/// A rotated `api_key` is compared by value (its `Debug` text is `***` before and after):
/// SIGHUP applies it to the next request, and a rotated `client_secret`, which the running
/// channel cannot take, is named in the log as waiting for a restart. Neither value is
/// shown in the log or the status.
#[test]
fn sighup_applies_a_rotated_api_key_and_names_a_rotated_client_secret_for_restart() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let log = stack.home.log_path("bot");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    stack.inject_group("cidRotate==", "before");
    stack.wait_outbox(1, Duration::from_secs(10));
    let sent_key = || {
        stack
            .fake_stats()
            .recent
            .back()
            .unwrap()
            .authorization
            .clone()
    };
    assert_eq!(sent_key().as_deref(), Some("Bearer test-key"));

    let original = std::fs::read_to_string(&cfg).unwrap();
    let rotated = original
        .replace("${LOCAL_MODEL_API_KEY}", "\"rotatedKEY7Qm\"")
        .replace(
            &format!("client_secret: \"{}\"", support::stack::CLIENT_SECRET),
            "client_secret: \"rotatedSECRET4Vz\"",
        );
    assert!(rotated.contains("rotatedKEY7Qm") && rotated.contains("rotatedSECRET4Vz"));
    std::fs::write(&cfg, rotated).unwrap();
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || log_text()
        .contains("config reloaded")));

    stack.inject_group("cidRotate==", "after");
    stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(sent_key().as_deref(), Some("Bearer rotatedKEY7Qm"));
    let text = log_text();
    assert!(
        text.contains("models.local_chat.api_key") && text.contains("next request"),
        "{text}"
    );
    let restart_line = text
        .lines()
        .find(|l| l.contains("channel.dingtalk.client_secret"))
        .unwrap_or_else(|| panic!("rotated client_secret not named: {text}"));
    assert!(
        restart_line.contains("until the daemon restarts"),
        "{restart_line}"
    );
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    for shown in [text, stack.status().to_string(), human.stdout] {
        assert!(
            !shown.contains("rotatedKEY7Qm") && !shown.contains("rotatedSECRET4Vz"),
            "secret shown: {shown}"
        );
    }
}

/// `limits` changed by a reload apply at the next start, as the reload says: the wait in
/// a conversation's line kept the new `max_wait_ms` at once while the wait for a model
/// slot kept the old one (black-box finding). Started at 8 s and reloaded to 0.5 s, a
/// message waiting 1.5 s behind its conversation's turn is still answered.
#[test]
fn a_reload_keeps_the_wait_bound_the_daemon_started_with() {
    let stack = Stack::new(slow_model(1500), &[]);
    let cfg = stack.write_config(
        &stack
            .bot_config(2, 30_000)
            .queue_wait_ms(8000)
            .section("access:\n  user_rate_limit: 0\n"),
    );
    stack.start_bot(&cfg);
    let log = stack.home.log_path("bot");
    let original = std::fs::read_to_string(&cfg).unwrap();
    let lowered = original.replace("max_wait_ms: 8000", "max_wait_ms: 500");
    assert_ne!(lowered, original, "{original}");
    std::fs::write(&cfg, lowered).unwrap();
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("config reloaded")
    }));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains("until the daemon restarts") && l.contains("limits")),
        "{text}"
    );
    stack.inject_group("cidReloadWait==", "first");
    stack.inject_group("cidReloadWait==", "second, behind the first");
    let out = stack.wait_outbox(2, Duration::from_secs(20));
    let texts: Vec<&str> = out.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(
        texts.iter().any(|t| t.starts_with("echo: second")),
        "the second waited under the reloaded bound: {texts:?} {}",
        stack.status()
    );
}

#[test]
fn secrets_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = stack
        .home
        .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("readable by others") && r.stderr.contains("chmod 600"),
        "{r:?}"
    );
    stack.start_bot(&cfg);
    stack
        .home
        .log_once("bot", |l| l.contains("readable by others"));

    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = stack
        .home
        .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert!(!r.stderr.contains("readable by others"), "{r:?}");
}

#[test]
fn a_failed_reload_names_the_key_and_line_never_the_secret() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let log = stack.home.log_path("bot");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let bad = good.replace(
        &format!("client_secret: \"{}\"", support::stack::CLIENT_SECRET),
        "client_secret: \"SECRETzz9${Qx7\"",
    );
    assert_ne!(bad, good);
    std::fs::write(&cfg, bad).unwrap();
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(30), || log_text()
        .contains("config reload failed")));
    let st = stack.status();
    let last = st["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("channel.dingtalk.client_secret") && last.contains("line 17"),
        "{st}"
    );
    let human = stack.home.run(&["daemon", "status", "--name", "bot"]);
    for shown in [log_text(), st.to_string(), human.stdout] {
        assert!(
            !shown.contains("SECRETzz9") && !shown.contains("Qx7"),
            "secret shown: {shown}"
        );
    }
}

/// Rounds of the chaos tests: about 10 by default; `CLAWDBOT_CHAOS_ROUNDS=100` is the long
/// mode.
fn chaos_rounds(default: usize) -> usize {
    std::env::var("CLAWDBOT_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The conversations (one per message here) the daemon's journal holds as accepted but not
/// answered, read from the file while the daemon is dead. The reader is the test's own: a
/// record is `[len u32 LE][crc32 u32 LE][JSON with "k"]`; it stops at the first record that
/// is short or does not parse (a torn tail) and ignores kinds it does not know.
fn unanswered_in_journal(path: &std::path::Path) -> std::collections::HashSet<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut conversation_of = std::collections::HashMap::new();
    let mut done = std::collections::HashSet::new();
    let mut at = 0usize;
    while let Some(h) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let Some(payload) = bytes.get(at + 8..at + 8 + len).filter(|_| len > 0) else {
            break;
        };
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            break;
        };
        let id = v["id"].as_str().unwrap_or_default().to_string();
        match v["k"].as_str() {
            Some("accepted") => {
                let cid = v["msg"]["conversation_id"].as_str().unwrap_or_default();
                conversation_of.insert(id, cid.to_string());
            }
            Some("done") => {
                done.insert(id);
            }
            _ => {}
        }
        at += 8 + len;
    }
    conversation_of
        .into_iter()
        .filter(|(id, _)| !done.contains(id))
        .map(|(_, cid)| cid)
        .collect()
}

/// One SIGKILL of the chaos test: when, what the journal held as unanswered at that moment,
/// and when the next daemon was up.
struct Kill {
    at_us: u64,
    unanswered: std::collections::HashSet<String>,
    restarted_us: u64,
}

/// Injects messages at `rate` per second (each in its own conversation, so replies are
/// counted per message) until `stop`; returns the conversation ids injected.
fn steady_injector(
    sim_url: String,
    rate: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sim = clawdbot::sim::client::SimClient::new(&sim_url);
        let period = Duration::from_micros(1_000_000 / rate);
        let start = std::time::Instant::now();
        let mut sent = Vec::new();
        // Bounded: at most 10 minutes of messages whatever the caller does.
        for i in 0..(rate * 600) {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let due = start + period * i as u32;
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            let cid = format!("cidChaos{i}==");
            rt.block_on(sim.inject(&serde_json::json!({"text": format!("q{i}"),
                "conversation_type": "group", "conversation_id": cid, "sender_staff_id": "0423001"})))
                .expect("inject");
            sent.push(cid);
        }
        sent
    })
}

/// Waits (bounded) until the process `pid` is gone.
fn wait_gone(pid: i32) {
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "pid {pid} survived SIGKILL"
    );
}

/// Kills in a row before the chaos lets one daemon live for a calm. The simulator, like
/// DingTalk, gives up on a frame after 5 deliveries, and each delivery that dies un-ACKed
/// needs its own kill (the next one comes at least the redelivery time later, to a live
/// connection). So a frame can only be lost to DingTalk's give-up if 5 kills fall, one
/// each, between its deliveries and its commit: physics, not the bot. With at most 4 kills
/// between calms, every frame meets a daemon that lives long enough to store it.
const KILLS_BEFORE_CALM: usize = 4;

/// Messages at a steady rate while the daemon is SIGKILLed at random moments (20-400 ms
/// apart, with a calm of `calm` after every [`KILLS_BEFORE_CALM`]) and started again; then
/// every message must be answered exactly once. `calm` must cover a redelivery and a commit.
fn chaos(
    stack: &Stack,
    cfg: &std::path::Path,
    env: &[(&str, &str)],
    rounds: usize,
    rate: u64,
    calm: Duration,
) {
    use rand::Rng;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let injector = steady_injector(stack.sim_url.clone(), rate, stop.clone());
    let mut rng = rand::rng();
    let journal = stack.home.state_dir("bot").join("journal/journal.log");
    let mut kills: Vec<Kill> = Vec::new();
    for round in 0..rounds {
        if round > 0 && round % KILLS_BEFORE_CALM == 0 {
            std::thread::sleep(calm);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..=400)));
        let pid = stack.bot_pid();
        let at_us = now_us();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        wait_gone(pid);
        // A SIGKILL loses no written bytes (the page cache is the kernel's): the file now
        // shows exactly what the dead daemon had recorded.
        let unanswered = unanswered_in_journal(&journal);
        stack.start_bot_env(cfg, env);
        kills.push(Kill {
            at_us,
            unanswered,
            restarted_us: now_us(),
        });
    }
    let kills_us: Vec<u64> = kills.iter().map(|k| k.at_us).collect();
    std::thread::sleep(Duration::from_millis(rng.random_range(20..=400)));
    stop.store(true, Ordering::SeqCst);
    let sent = injector.join().unwrap();
    assert!(sent.len() as u64 >= rate, "only {} injected", sent.len());

    // Every message answered (redeliveries of un-ACKed frames included)...
    let answered_all = wait_until(Duration::from_secs(60), || {
        let counts = replies_by_conversation(&stack.outbox());
        sent.iter().all(|c| counts.contains_key(c))
    });
    // ...and the daemon settled: nothing pending in its journal, nothing at the model.
    let settled = wait_until(Duration::from_secs(30), || {
        let st = stack.status();
        st["journal"]["pending"] == 0 && st["models"][0]["in_flight"] == 0
    });
    let outbox = stack.outbox();
    let counts = replies_by_conversation(&outbox);
    let lost: Vec<&String> = sent.iter().filter(|c| !counts.contains_key(*c)).collect();
    let mut excused = 0;
    let mut excused_us: Vec<i64> = Vec::new();
    let mut duplicated = Vec::new();
    for c in &sent {
        if counts.get(c).copied().unwrap_or(0) < 2 {
            continue;
        }
        let first_us = outbox
            .iter()
            .filter(|e| e["conversation_id"] == c.as_str())
            .filter_map(|e| e["at_us"].as_u64())
            .min()
            .unwrap();
        // The one window left: DingTalk took the reply, and the daemon died before it wrote
        // the message's "answered" record. Excused only when the journal read after a kill
        // shows the message unanswered and its first reply came before the next daemon was
        // up (so it was the dead daemon's reply); the distance to that kill is reported.
        let before_kill = kills
            .iter()
            .find(|k| k.unanswered.contains(c) && first_us <= k.restarted_us)
            .map(|k| k.at_us as i64 - first_us as i64);
        if let Some(d) = before_kill {
            excused += 1;
            excused_us.push(d);
        } else {
            let nearest = kills_us
                .iter()
                .map(|k| *k as i64 - first_us as i64)
                .min_by_key(|d| d.abs())
                .unwrap_or(0);
            duplicated.push(format!(
                "{c} (first reply {nearest} us before the nearest kill)"
            ));
        }
    }
    let st = stack.status();
    // Frames whose ACK died with a daemon are redelivered and ACKed as duplicates. With a
    // calm after every 4 kills, none can use up its 5 deliveries: wait until each is ACKed.
    let unacked = || -> Vec<Value> {
        let v = stack.rt.block_on(stack.sim.get("/_sim/messages")).unwrap();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["acked"] != true)
            .cloned()
            .collect()
    };
    wait_until(Duration::from_secs(30), || unacked().is_empty());
    let unacked_detail = unacked();
    eprintln!(
        "chaos: {} rounds, {} messages, lost {}, duplicated {}, excused (unanswered in the journal at a kill, replied before the restart) {} (their reply this long before the kill, us: {:?}), un-ACKed at the end {}, journal {}",
        rounds,
        sent.len(),
        lost.len(),
        duplicated.len(),
        excused,
        {
            excused_us.sort_unstable();
            excused_us
        },
        unacked_detail.len(),
        st["journal"]
    );
    let first: Vec<_> = lost.iter().take(20).collect();
    assert!(
        answered_all && lost.is_empty(),
        "{} lost, e.g. {first:?}",
        lost.len()
    );
    assert!(settled, "daemon never settled: {st}");
    assert!(duplicated.is_empty(), "answered twice: {duplicated:?}");
    assert!(
        unacked_detail.is_empty(),
        "messages left un-ACKed by the bot: {unacked_detail:?} kills {kills_us:?}"
    );
}

fn chaos_stack(redeliver_ms: &str) -> (Stack, std::path::PathBuf) {
    let stack = Stack::new(
        FakeConfig::default(),
        &["--redeliver-unacked-ms", redeliver_ms],
    );
    let cfg = stack.config(64, 10_000, "");
    // Each message is its own conversation; the robot may send as fast as they come.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    api_base:",
        "    send_rate:\n      per_robot: 1000\n    api_base:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    (stack, cfg)
}

#[test]
fn chaos_sigkill_at_random_moments_loses_nothing_and_answers_once() {
    let (stack, cfg) = chaos_stack("500");
    // A calm: the 500 ms redelivery, its 125 ms tick and a commit, with room for a loaded
    // machine.
    chaos(
        &stack,
        &cfg,
        &[],
        chaos_rounds(10),
        100,
        Duration::from_millis(2000),
    );
}

#[test]
fn chaos_with_a_slow_journal_sync_loses_nothing_and_answers_once() {
    // Every journal sync takes 300 ms more: many frames wait for one commit, and are ACKed
    // only after it.
    let (stack, cfg) = chaos_stack("1000");
    let env = [("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "300")];
    let pid = stack.bot_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_gone(pid);
    stack.start_bot_env(&cfg, &env);
    // A calm: the 1 s redelivery, its 250 ms tick and a 300 ms commit, with room for a
    // loaded machine.
    chaos(
        &stack,
        &cfg,
        &env,
        chaos_rounds(10).div_ceil(2),
        20,
        Duration::from_millis(3000),
    );
}

/// Every file under `dir` (recursively).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether the simulator saw `msg_id`'s frame ACKed.
fn acked(stack: &Stack, msg_id: &str) -> bool {
    let v = stack.rt.block_on(stack.sim.get("/_sim/messages")).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["msgId"] == msg_id && m["acked"] == true)
}

/// Waits (at most 15 s) until the journal refused a message, naming the status if not.
fn wait_refused(stack: &Stack) {
    assert!(
        wait_until(Duration::from_secs(15), || stack.status()["journal"]
            ["failed_accepts"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "{}",
        stack.status()
    );
}

#[test]
fn a_full_disk_leaves_messages_unacked_and_answers_nothing_twice() {
    let stack = Stack::new(slow_model(1500), &["--redeliver-unacked-ms", "1000"]);
    let state = stack.home.path().join("state").join("bot");
    let disk = support::Tmpfs::mount(&state, "1m");
    let cfg = stack.config(4, 10_000, "");
    stack.start_bot(&cfg);
    stack.inject_group("cidFull1==", "before the disk fills");
    assert!(wait_until(Duration::from_secs(10), || stack
        .fake_stats()
        .in_flight
        >= 1));
    let filler = disk.fill();

    // Not stored: not ACKed (DingTalk keeps it), and said so in status. (A long title makes
    // its record bigger than a page, so the slack of the journal's last page cannot take
    // it; the "answered" mark retry is shown by the journal's unit test on a full tmpfs.)
    let second = stack.inject(serde_json::json!({"text": "while the disk is full",
        "conversation_type": "group", "conversation_id": "cidFull2==",
        "conversation_title": "t".repeat(6000), "sender_staff_id": "0423001"}))["msgId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_refused(&stack);
    let st = stack.status();
    assert!(
        st["journal"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("journal.log"),
        "{st}"
    );
    assert!(
        !acked(&stack, &second),
        "a message that is not on disk was ACKed"
    );
    stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(stack.replies_in("cidFull1==").len(), 1);

    // Space again: the second message is redelivered, stored, ACKed and answered once.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || stack
            .replies_in("cidFull2==")
            .len()
            == 1
            && stack.status()["journal"]["done_retry_queue"] == 0),
        "{}",
        stack.status()
    );
    assert!(acked(&stack, &second));

    // After kill -9 and a restart nothing is answered again: nothing is pending to replay.
    let pid = stack.bot_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_gone(pid);
    stack.start_bot(&cfg);
    let st = stack.status();
    assert_eq!(st["journal"]["pending"], 0, "{st}");
    assert_eq!(stack.replies_in("cidFull1==").len(), 1);
    assert_eq!(stack.replies_in("cidFull2==").len(), 1);
    // No leftovers: no temporary or empty files in the state folder (the start lock is
    // empty by design).
    for f in files_under(&state) {
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        let name = f.to_string_lossy();
        assert!(
            !name.ends_with(".tmp") && (len > 0 || name.ends_with("/start.lock")),
            "leftover {name} ({len} bytes)"
        );
    }
}

#[test]
fn the_old_inbox_is_migrated_once_and_a_fifo_in_it_never_hangs_the_start() {
    use std::os::unix::fs::DirBuilderExt;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    let state = stack.home.path().join("state").join("bot");
    let inbox = state.join("inbox");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&inbox)
        .unwrap();
    nix::unistd::mkfifo(&inbox.join("stuck.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A v0.1 entry whose file name is not its id's hash (v0.1 answered it on every start).
    let payload = serde_json::json!({"msgId": "msgOld1==", "conversationId": "cidOld==",
        "conversationType": "2", "senderId": "$:LWCP_v1:$u", "senderStaffId": "0423001",
        "senderNick": "Li Lei", "msgtype": "text", "text": {"content": "left from v0.1"}});
    let old = clawdbot::dingtalk::message::parse_robot_message(&payload, 1).unwrap();
    std::fs::write(
        inbox.join("0123.json"),
        serde_json::to_vec(&(&old.msg_id, &old)).unwrap(),
    )
    .unwrap();

    stack.start_bot(&cfg);
    stack.home.log_once("bot", |l| {
        l.contains("stuck.json") && l.contains("not a regular file")
    });
    stack.wait_outbox(1, Duration::from_secs(15));
    assert!(wait_until(Duration::from_secs(10), || stack.status()
        ["journal"]["pending"]
        == 0));

    // Restart: the entry was migrated and answered once; nothing is replayed again.
    let r = stack.home.run(&[
        "daemon",
        "restart",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    stack.wait_connected();
    let st = stack.status();
    assert_eq!(st["journal"]["pending"], 0, "{st}");
    assert_eq!(stack.replies_in("cidOld==").len(), 1);
    assert!(!inbox.join("0123.json").exists());
}

#[test]
fn a_frame_is_acked_only_after_its_journal_sync_and_pings_are_answered_meanwhile() {
    let stack = Stack::new(FakeConfig::default(), &["--ping-interval-ms", "50"]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot_env(&cfg, &[("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "1500")]);
    let pings = || {
        let v = stack
            .rt
            .block_on(stack.sim.get("/_sim/connections"))
            .unwrap();
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["pings_echoed"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let message = |msg_id: &str| {
        let v = stack.rt.block_on(stack.sim.get("/_sim/messages")).unwrap();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["msgId"] == msg_id)
            .cloned()
            .unwrap()
    };
    // Past the daemon's first second, when it holds its replies (its start-up send
    // window), so a reply sent before the sync would show.
    std::thread::sleep(Duration::from_millis(1200));
    let msg_id = stack.inject_group("cidSlowDisk==", "wait for the disk");
    let before = pings();
    // The reader keeps answering pings while the message's commit is under way, and the
    // turn asks the model meanwhile, but nothing is replied before the message is durable...
    assert!(wait_until(Duration::from_secs(30), || pings()
        >= before + 3
        && stack.fake_stats().requests >= 1));
    // (the model answers at once: a reply not held for the sync goes out now)
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(message(&msg_id)["acked"], true, "ACKed before its sync");
    assert!(stack.outbox().is_empty(), "replied before its sync");
    // ...and ACKs it once the (1.5 s) sync is done.
    assert!(wait_until(Duration::from_secs(10), || message(&msg_id)
        ["acked"]
        == true));
    let m = message(&msg_id);
    let waited = m["acked_us"].as_u64().unwrap() - m["sent_us"][0].as_u64().unwrap();
    assert!(waited >= 1_500_000, "ACK after {waited} us");
    stack.wait_outbox(1, Duration::from_secs(10));
}

/// A turn runs while its message's sync does (it asks the model meanwhile), so a sync that
/// fails must keep that turn from replying: the message is forgotten and not ACKed, and
/// DingTalk's redelivery, once the journal works again, is answered exactly once. The sync
/// is made to fail by deleting the journal file while it runs (a daemon refuses to ACK
/// into a deleted file until it is restarted).
#[test]
fn a_message_whose_sync_fails_is_not_answered_by_its_first_turn_but_once_redelivered() {
    let stack = Stack::new(FakeConfig::default(), &["--redeliver-unacked-ms", "1000"]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot_env(&cfg, &[("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "1500")]);
    let journal = stack
        .home
        .path()
        .join("state")
        .join("bot")
        .join("journal")
        .join("journal.log");
    let msg_id = stack.inject_group("cidLostSync==", "is this kept?");
    // Its turn asked the model while the (1.5 s) sync runs; the file goes away meanwhile.
    assert!(wait_until(Duration::from_secs(10), || stack
        .fake_stats()
        .requests
        >= 1));
    std::fs::remove_file(&journal).unwrap();
    wait_refused(&stack);
    // The model answered at once; give its reply time to show if the turn sent it.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        stack.replies_in("cidLostSync==").is_empty(),
        "a message that is not on disk was answered"
    );
    let is_acked = || acked(&stack, &msg_id);
    assert!(!is_acked(), "a message that is not on disk was ACKed");
    // Nor is it logged as answered (red team: the turn's outcome line said so).
    let log = std::fs::read_to_string(stack.home.log_path("bot")).unwrap();
    let about = |what: &str| {
        log.lines()
            .filter(|l| l.contains(&msg_id) && l.contains(what))
            .count()
    };
    assert!(about("not stored") >= 1, "{log}");
    assert_eq!(about("answered"), 0, "{log}");

    // A restart makes a new journal: the redelivery is stored, ACKed and answered once.
    let pid = stack.bot_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_gone(pid);
    stack.start_bot(&cfg);
    assert!(wait_until(Duration::from_secs(20), || is_acked()
        && stack.replies_in("cidLostSync==").len() == 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stack.replies_in("cidLostSync==").len(), 1, "answered twice");
}

/// A daemon killed while a message's sync runs leaves its record written but not synced
/// (in the page cache, readable). The next daemon must sync it before answering it: a power
/// loss after an answer of a record not on disk would lose the record, and DingTalk (never
/// ACKed) would deliver the message again. Red team: the next start answered it 0.9 s in,
/// its first sync of the journal coming 6 s later. Every sync here takes 3 s more (the
/// test hook), so an answer before the start's sync shows as one within 3 s.
#[test]
fn a_record_left_unsynced_by_kill_9_is_synced_before_the_next_start_answers_it() {
    let stack = Stack::new(FakeConfig::default(), &["--redeliver-unacked-ms", "60000"]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot_env(&cfg, &[("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "5000")]);
    stack.inject_group("cidUnsynced==", "written, not synced");
    // Its turn ran (it asks the model during the sync) and waits for the 5 s sync.
    assert!(wait_until(Duration::from_secs(10), || stack
        .fake_stats()
        .requests
        >= 1));
    let pid = stack.bot_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_gone(pid);
    assert!(stack.replies_in("cidUnsynced==").is_empty());

    let restarted = std::time::Instant::now();
    stack.start_bot_env(&cfg, &[("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "3000")]);
    assert!(wait_until(Duration::from_secs(30), || stack
        .replies_in("cidUnsynced==")
        .len()
        == 1));
    let took = restarted.elapsed();
    assert!(
        took >= Duration::from_millis(3000),
        "answered {took:?} after the restart, before its record was synced"
    );
}

#[test]
fn http_callback_mode_answers_200_only_once_the_message_is_durable() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let state = stack.home.path().join("state").join("bot");
    let disk = support::Tmpfs::mount(&state, "1m");
    let port = support::free_port();
    let cfg = stack.config(2, 5000, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    api_base:",
        &format!("    mode: http\n    http_listen: \"127.0.0.1:{port}\"\n    api_base:"),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut start = stack.home.command(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    start.env("CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS", "1000");
    let r = support::Run::from(start.output().unwrap());
    assert_eq!(r.code, 0, "{r:?}");
    let url = format!("http://127.0.0.1:{port}/callback");

    // The 200 comes after the (1 s) journal sync.
    let t0 = std::time::Instant::now();
    let v = stack.inject(
        serde_json::json!({"text": "durable first", "conversation_type": "group",
        "conversation_id": "cidHttp1==", "callback_url": url}),
    );
    assert_eq!(v["callback_status"], 200, "{v}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "200 before the sync: {:?}",
        t0.elapsed()
    );
    stack.wait_outbox(1, Duration::from_secs(10));

    // A message that cannot be stored gets an error status, never a 200.
    let filler = disk.fill();
    let signed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let no_room = serde_json::json!({"text": "no room", "conversation_type": "group",
        "conversation_id": "cidHttp2==", "conversation_title": "t".repeat(6000),
        "callback_url": url, "timestamp_ms": signed_at});
    let v = stack.inject(no_room.clone());
    assert_eq!(v["callback_status"], 503, "{v}");
    std::fs::remove_file(filler).unwrap();

    // The 503 did not use up its (timestamp, sign): the same signed retry is stored now ...
    let v = stack.inject(no_room.clone());
    assert_eq!(v["callback_status"], 200, "retry after the 503: {v}");
    stack.wait_outbox(2, Duration::from_secs(10));
    // ... and only that stored one consumed the pair: a third use is a replay.
    let v = stack.inject(no_room);
    assert_eq!(v["callback_status"], 409, "replay after the 200: {v}");
}

/// Retries of undelivered replies, fast enough for a test.
const QUICK_REDELIVERY: &str = "reply:\n  redelivery_delay_ms: 100\n  redelivery_attempts: 2\n";

fn faults(stack: &Stack, f: Value) {
    stack.rt.block_on(stack.sim.faults(f)).expect("faults set");
}

fn texts_and_routes(out: &[Value]) -> Vec<(String, String)> {
    out.iter()
        .map(|e| {
            (
                e["route"].as_str().unwrap_or_default().to_string(),
                // Markdown replies in groups end with the asker's @mention.
                e["text"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches("\n\n@0423001")
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until the status shows `key` under `delivery` at `want`.
fn wait_delivery(stack: &Stack, key: &str, want: u64) -> Value {
    let mut last = Value::Null;
    let seen = wait_until(Duration::from_secs(15), || {
        last = stack.status();
        last["delivery"][key].as_u64() == Some(want)
    });
    assert!(seen, "delivery.{key} never reached {want}: {last}");
    last
}

#[test]
fn a_reply_the_session_webhook_refuses_twice_goes_out_through_the_openapi_in_the_same_turn() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    faults(&stack, serde_json::json!({"webhook_busy": 2}));
    stack.inject_group("cidBusy==", "are you there?");
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(
        texts_and_routes(&out),
        [("group_send".into(), "echo: are you there?".into())]
    );
    let st = stack.status();
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    assert_eq!(st["delivery"]["replies_redelivered"], 0, "{st}");
}

#[test]
fn a_reply_no_route_takes_is_retried_by_the_running_daemon_and_sent_once() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, QUICK_REDELIVERY);
    stack.start_bot(&cfg);
    // The turn's own try: the webhook is busy twice, then the OpenAPI times out twice.
    faults(
        &stack,
        serde_json::json!({"webhook_busy": 2, "gateway_504": 2}),
    );
    stack.inject_group("cidRetry==", "deliver me");
    let st = wait_delivery(&stack, "replies_redelivered", 1);
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    assert_eq!(
        texts_and_routes(&stack.outbox()),
        [("session_webhook".into(), "echo: deliver me".into())]
    );
    let log = stack
        .home
        .log_once("bot", |l| l.contains("reply delivered on retry"));
    assert!(!log.contains("deliver me"), "message text logged");
    // Completed: a restart answers nothing again.
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    stack.inject_group("cidRetry==", "after restart");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(texts_and_routes(&out)[1].1, "echo: after restart");
}

#[test]
fn after_every_retry_failed_the_user_is_told_sorry_and_the_message_is_completed() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, QUICK_REDELIVERY);
    stack.start_bot(&cfg);
    // Each try: the webhook says "session gone", the OpenAPI refuses the token twice.
    // The turn's try and both retries fail; the sorry then goes through the webhook.
    faults(
        &stack,
        serde_json::json!({"session_300001": 3, "invalid_auth": 6}),
    );
    let msg_id = stack.inject_group("cidSorry==", "answer me");
    let st = wait_delivery(&stack, "replies_given_up", 1);
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    let out = stack.outbox();
    assert_eq!(
        texts_and_routes(&out),
        [(
            "session_webhook".into(),
            "Sorry, I could not deliver my answer to your last message. Please ask again.".into()
        )]
    );
    stack.home.log_once("bot", |l| {
        l.contains(&msg_id) && l.contains("undelivered notice was sent instead")
    });
    // Completed: the restarted daemon does not answer it again.
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    stack.inject_group("cidSorry==", "next");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(texts_and_routes(&out)[1].1, "echo: next");
}

/// A busy reply DingTalk does not take is not retried (minutes late it tells nothing, and
/// under a flood the retries held every refused message and competed for the send slots):
/// the message is marked answered without it and counted as not sent, and a restart does
/// not answer it again. Here the line is full (`max_waiting: 0`) while A is at the model,
/// and B's busy reply fails on both routes.
#[test]
fn a_busy_reply_dingtalk_does_not_take_is_not_retried_and_its_message_is_done() {
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            latency_ms: 2000,
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.write_config(
        &stack
            .bot_config(1, 30_000)
            .queue(0, 20_000)
            .section(QUICK_REDELIVERY),
    );
    stack.start_bot(&cfg);
    stack.inject_group("cidLine==", "question A");
    assert!(wait_until(Duration::from_secs(10), || stack.status()
        ["channel"]["messages_in"]
        == 1));
    // One try: the webhook says "session gone", the OpenAPI refuses the token twice.
    faults(
        &stack,
        serde_json::json!({"session_300001": 1, "invalid_auth": 2}),
    );
    let msg_id = stack.inject_group("cidLine==", "question B");
    stack.home.log_once("bot", |l| {
        l.contains(&msg_id) && l.contains("busy reply not sent")
    });
    let out = stack.wait_outbox(1, Duration::from_secs(15));
    assert_eq!(
        texts_and_routes(&out),
        [("session_webhook".into(), "echo: question A".into())]
    );
    let st = stack.status();
    assert_eq!(st["busy_replies"]["line_full"], 1, "{st}");
    assert_eq!(st["busy_replies"]["not_sent"], 1, "{st}");
    assert_eq!(st["delivery"]["replies_retrying"], 0, "{st}");
    assert_eq!(st["delivery"]["replies_given_up"], 0, "{st}");
    // Done: the restarted daemon does not answer B.
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    stack.inject_group("cidLine==", "question C");
    let out = stack.wait_outbox(2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        texts_and_routes(&stack.outbox())[1..],
        [("session_webhook".into(), "echo: question C".into())]
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn when_even_the_sorry_fails_the_message_is_answered_by_the_next_start() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(
        2,
        5000,
        "reply:\n  redelivery_delay_ms: 100\n  redelivery_attempts: 1\n",
    );
    stack.start_bot(&cfg);
    // The turn's try, one answer retry and two sorry tries: four failures on both routes.
    faults(
        &stack,
        serde_json::json!({"session_300001": 4, "invalid_auth": 8}),
    );
    let msg_id = stack.inject_group("cidPending==", "keep me");
    let st = wait_delivery(&stack, "replies_left_pending", 1);
    assert_eq!(st["delivery"]["replies_given_up"], 0, "{st}");
    assert!(stack.outbox().is_empty());
    let log = stack.home.log_once("bot", |l| {
        l.contains("stays in the inbox for the next start")
    });
    let error_line = log
        .lines()
        .find(|l| l.contains("stays in the inbox for the next start"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        error_line.contains("ERROR") && error_line.contains(&msg_id),
        "{error_line}"
    );
    assert_eq!(
        stack.home.run(&["daemon", "restart", "--name", "bot"]).code,
        0
    );
    stack.wait_connected();
    // A later message of the same conversation is answered after the replayed one, so
    // once it is in, a second answer to the replayed message would be too.
    stack.inject_group("cidPending==", "and then");
    let out = stack.wait_outbox(2, Duration::from_secs(10));
    assert_eq!(
        texts_and_routes(&out),
        [
            ("session_webhook".into(), "echo: keep me".into()),
            ("session_webhook".into(), "echo: and then".into())
        ],
    );
}

/// The simulator's cards, oldest first.
fn cards(stack: &Stack) -> Vec<Value> {
    let v = stack
        .rt
        .block_on(stack.sim.get("/_sim/cards"))
        .expect("cards");
    let mut cards: Vec<Value> = v["cards"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    cards.sort_by_key(|c| c["created_at_ms"].as_u64());
    cards
}

fn last_flow(card: &Value) -> &str {
    card["flow_history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[test]
fn an_ai_card_left_typing_by_kill_9_is_failed_on_restart_and_the_message_answered_once() {
    let answer = "a slow streamed answer, two characters at a time";
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            chunk_interval_ms: 100,
            chunk_chars: 2,
            reply: Some(answer.into()),
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.config(2, 20_000, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    targets:",
        "    card_template_id: \"382e4302-551d-4880-bf29-a30acfab2e71.schema\"\n    targets:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidCardKill==", "stream slowly");
    // Kill while the card is typing (flowStatus 2) with part of the answer shown.
    assert!(
        wait_until(Duration::from_secs(10), || cards(&stack)
            .first()
            .is_some_and(
                |c| last_flow(c) == "2" && c["stream_updates"].as_u64() >= Some(1)
            )),
        "the card never started streaming: {:?}",
        cards(&stack)
    );
    kill(Pid::from_raw(stack.bot_pid()), Signal::SIGKILL).unwrap();
    let typing = cards(&stack)[0].clone();
    assert_eq!(last_flow(&typing), "2", "{typing}");

    stack.start_bot(&cfg);
    let mut seen = Vec::new();
    let done = wait_until(Duration::from_secs(20), || {
        seen = cards(&stack);
        seen.len() == 2 && last_flow(&seen[0]) == "5" && last_flow(&seen[1]) == "3"
    });
    assert!(done, "old card not failed or no new answer: {seen:?}");
    let (old, new) = (&seen[0], &seen[1]);
    assert_eq!(old["outTrackId"], typing["outTrackId"]);
    assert!(
        old["params"]["msgContent"]
            .as_str()
            .unwrap_or_default()
            .contains("restarted"),
        "{old}"
    );
    assert_eq!(new["params"]["msgContent"], answer, "{new}");
    // Exactly once: one card carries the answer, and no text reply was sent besides.
    assert!(stack.outbox().is_empty(), "{:?}", stack.outbox());
    let st = stack.status();
    assert_eq!(st["delivery"]["cards_closed_after_restart"], 1, "{st}");
    // Nothing left recorded as open once both cards are final.
    let open_dir = stack.home.path().join("state/bot/open-cards");
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_dir(&open_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(false)),
        "open-card records left behind"
    );
}

#[test]
fn an_ai_card_dingtalk_will_not_finalize_falls_back_to_one_text_reply_and_is_closed_later() {
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            first_token_ms: 1500,
            chunk_chars: 100,
            reply: Some("the answer".into()),
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.config(2, 20_000, QUICK_REDELIVERY);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    targets:",
        "    card_template_id: \"382e4302-551d-4880-bf29-a30acfab2e71.schema\"\n    targets:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidCardDown==", "card please");
    assert!(
        wait_until(Duration::from_secs(10), || !cards(&stack).is_empty()),
        "no card opened"
    );
    // Eight card calls time out from now on (504 and its one retry = two each): the one
    // streaming update takes at most four, so finishing the card fails.
    faults(&stack, serde_json::json!({"gateway_504": 8}));
    let out = stack.wait_outbox(1, Duration::from_secs(20));
    assert_eq!(
        texts_and_routes(&out),
        [("session_webhook".into(), "the answer".into())]
    );
    // Recorded as open until a later try fails it; then the record goes.
    let card_id = cards(&stack)[0]["outTrackId"].as_str().unwrap().to_string();
    let record = stack
        .home
        .path()
        .join("state/bot/open-cards")
        .join(format!("{card_id}.json"));
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = cards(&stack);
            last_flow(&seen[0]) == "5" && !record.exists()
        }),
        "card never closed: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(stack.outbox().len(), 1, "answered twice");
}

/// A 2-part reply cut by `kill -9` between its parts: the restart sends part 2 only (part 1
/// once), from the reply the journal recorded, without asking the model again.
#[test]
fn a_multi_part_reply_cut_by_sigkill_resumes_after_the_sent_part_without_a_new_answer() {
    // Numbered words, so the two parts differ and their order shows.
    let answer: String = (0..1300).map(|i| format!("w{i} ")).collect();
    let stack = Stack::new(
        FakeConfig::from(FakeBehavior {
            reply: Some(answer.clone()),
            ..Default::default()
        }),
        &[],
    );
    let cfg = stack.config(4, 10_000, "");
    // One message a second: part 2 leaves about a second after part 1.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "    api_base:",
        "    send_rate:\n      per_robot: 1\n      per_conversation: 1\n    api_base:",
    );
    std::fs::write(&cfg, text).unwrap();
    stack.start_bot(&cfg);
    stack.inject_group("cidParts==", "a long question");
    stack.wait_outbox(1, Duration::from_secs(15));
    let pid = stack.bot_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let before = stack.outbox();
    assert_eq!(before.len(), 1, "part 2 left before the kill: {before:?}");
    assert_eq!(stack.fake_stats().requests, 1);

    stack.start_bot(&cfg);
    stack.wait_outbox(2, Duration::from_secs(30));
    // Count once the daemon has nothing left to send: a duplicate part would be in by then.
    stack.wait_settled();
    let out = stack.outbox();
    let texts: Vec<&str> = out.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts.len(),
        2,
        "parts sent: {:?}",
        texts.iter().map(|t| t.len()).collect::<Vec<_>>()
    );
    assert_ne!(texts[0], texts[1], "part 1 sent twice");
    let words: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split_whitespace())
        .filter(|w| !w.starts_with('@'))
        .collect();
    assert_eq!(
        words,
        answer.split_whitespace().collect::<Vec<_>>(),
        "the two parts are not the recorded answer, in order"
    );
    assert_eq!(
        stack.fake_stats().requests,
        1,
        "the model was asked again after the restart"
    );
}

/// With the start lock, pid file and control socket removed by hand, a second daemon on the
/// same state folder is refused by the journal's own lock, naming the holder; the first
/// keeps answering.
#[test]
fn a_second_daemon_on_the_same_journal_is_refused_even_without_start_lock_pid_and_socket() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(4, 10_000, "");
    stack.start_bot(&cfg);
    let first = stack.bot_pid();
    let state = stack.home.state_dir("bot");
    for leftover in [
        state.join("start.lock"),
        state.join("pid"),
        stack.home.run_dir("bot").join("control.sock"),
    ] {
        std::fs::remove_file(&leftover)
            .unwrap_or_else(|e| panic!("remove {}: {e}", leftover.display()));
    }
    let second = stack.home.run(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_ne!(second.code, 0, "a second daemon started: {second:?}");
    let said = format!(
        "{}{}{}",
        second.stdout,
        second.stderr,
        stack.home.all_logs()
    );
    assert!(said.contains("in use by another clawdbot daemon"), "{said}");
    assert!(said.contains(&format!("pid {first}")), "{said}");
    assert!(
        kill(Pid::from_raw(first), None).is_ok(),
        "the first daemon died"
    );
    stack.inject_group("cidStillUp==", "still there?");
    stack.wait_outbox(1, Duration::from_secs(10));
    // Without its pid file `daemon stop` cannot find the daemon: end it here.
    kill(Pid::from_raw(first), Signal::SIGTERM).unwrap();
    wait_gone(first);
}
