//! The control socket survives hostile or broken clients.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawdbot_testkit::fake_model::FakeConfig;
use serde_json::json;
use support::stack::Stack;
use support::{free_port, seed_config, Home};

#[test]
fn garbage_oversize_and_silent_clients_cannot_wedge_the_daemon() {
    let home = Home::new();
    let cfg = home.write("bot.yaml", &seed_config("http://127.0.0.1:9/v1"));
    assert_eq!(
        home.run(&[
            "daemon",
            "start",
            "--name",
            "bot",
            "--config",
            cfg.to_str().unwrap()
        ])
        .code,
        0
    );
    let sock = home.run_dir("bot").join("control.sock");

    // More silent clients than the connection cap (64) hold connections without saying
    // hello: the oldest are closed to make room. A timer never fires early, so a close
    // seen less than the handshake timeout (2 s) after the first connect cannot be that
    // timeout's: it was the eviction (the bound is a fact of the daemon, not a guess).
    let t = Instant::now();
    let mut silent: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut buf = [0u8; 16];
    for s in &mut silent[..16] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the oldest silent clients were kept {:?}",
        t.elapsed()
    );

    // A frame header announcing 2 GiB is refused and the connection closed.
    let mut huge = UnixStream::connect(&sock).unwrap();
    huge.write_all(&0x8000_0000u32.to_be_bytes()).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        huge.read(&mut buf).unwrap_or(0),
        0,
        "oversize frame must close the connection"
    );

    // Garbage JSON in a well-formed frame: closed, nothing else affected.
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(&5u32.to_be_bytes()).unwrap();
    garbage.write_all(b"{{{{{").unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(garbage.read(&mut buf).unwrap_or(0), 0);

    // A request before hello is refused.
    let mut rude = UnixStream::connect(&sock).unwrap();
    let body = br#"{"type":"shutdown","drain_ms":0}"#;
    rude.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    rude.write_all(body).unwrap();
    rude.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(rude.read(&mut buf).unwrap_or(0), 0);

    // Meanwhile a real client is served promptly.
    let t = Instant::now();
    let st = home.run(&["--json", "daemon", "status", "--name", "bot"]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "status took {:?}",
        t.elapsed()
    );
    drop(silent);
    assert_eq!(
        home.run(&["daemon", "status", "--name", "bot"]).code,
        0,
        "the shutdown before hello was obeyed"
    );
}

/// `cmd` run under `ulimit -n limit` (soft and hard, so it cannot be raised again).
fn under_nofile(limit: u32, cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$@\""))
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.stdin(Stdio::null());
    sh
}

/// The issue's scenario: a daemon in callback mode at 300 descriptors, 400 idle and
/// trickling connections on its callback port. The control socket still answers at once,
/// a signed callback still gets in and is answered, and nothing runs out of descriptors.
#[test]
fn a_connection_flood_at_300_descriptors_leaves_status_and_signed_callbacks_working() {
    const FLOOD: usize = 400;
    let stack = Stack::new(FakeConfig::default(), &[]);
    let port = free_port();
    let cfg = stack.config(
        2,
        5000,
        &format!("    mode: http\n    http_listen: \"127.0.0.1:{port}\"\n"),
    );
    let start = stack.home.command(&[
        "daemon",
        "start",
        "--name",
        "bot",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let started = under_nofile(300, &start).output().expect("start");
    assert!(started.status.success(), "{started:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", stack.bot_pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("300")),
        "{limits}"
    );

    // Half the flood says nothing; the other half trickles a request head, a byte at a time.
    let mut idle = Vec::new();
    let mut trickling = Vec::new();
    for i in 0..FLOOD {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        if i % 2 == 0 {
            idle.push(s);
        } else {
            let mut s = s;
            let _ = s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n");
            trickling.push(s);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for s in &mut trickling {
                    let _ = s.write_all(b"x");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let t = Instant::now();
    let st = stack
        .home
        .run(&["--json", "daemon", "status", "--name", "bot"]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "status took {:?}",
        t.elapsed()
    );

    let url = format!("http://127.0.0.1:{port}/");
    let inj = stack.inject(
        json!({"text": "through the flood", "conversation_type": "group",
        "conversation_id": "cidFlood==", "callback_url": url}),
    );
    assert_eq!(inj["callback_status"], 200, "{inj}");
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert_eq!(out[0]["conversation_id"], "cidFlood==");

    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    drop(idle);
    let logs = stack.home.all_logs();
    assert!(
        !logs.contains("Too many open files"),
        "ran out of descriptors"
    );
}

/// Red-team F3: a captured (timestamp, sign) pair stays refused after `daemon restart`
/// (409), whatever body it carries: the admitted pairs are recorded in the state folder
/// before the callback is answered, and reloaded at start.
#[test]
fn a_captured_callback_pair_is_refused_after_a_restart() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let port = free_port();
    let cfg = stack.config(
        2,
        5000,
        &format!("    mode: http\n    http_listen: \"127.0.0.1:{port}\"\n"),
    );
    let cfg = cfg.to_str().unwrap();
    let r = stack
        .home
        .run(&["daemon", "start", "--name", "bot", "--config", cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    let url = format!("http://127.0.0.1:{port}/");
    let ts = clawdbot::clock::now_ms().to_string();
    let sign = clawdbot::sim::sign::callback_signature(&ts, support::stack::CLIENT_SECRET);
    let post = |msg_id: &str, text: &str| -> u16 {
        let body = json!({"msgId": msg_id, "conversationId": "cidReplay==",
            "conversationType": "2", "msgtype": "text", "text": {"content": text},
            "senderStaffId": "0423001", "senderNick": "Li",
            "robotCode": support::stack::CLIENT_ID});
        stack.rt.block_on(async {
            reqwest::Client::new()
                .post(&url)
                .header("timestamp", &ts)
                .header("sign", &sign)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("callback answered")
                .status()
                .as_u16()
        })
    };
    assert_eq!(post("msgGenuine", "genuine"), 200);
    let r = stack.home.run(&["daemon", "restart", "--name", "bot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(post("msgForged", "forged with a captured pair"), 409);
    let state = stack.home.state_dir("bot").join("callback-replay");
    let mode = std::fs::metadata(&state).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(stack.home.run(&["daemon", "stop", "--name", "bot"]).code, 0);
}
