//! `clawdbot sim` as a process: serve + inject + outbox through the CLI, and the channel
//! reconnecting after the simulator is killed and restarted on the same port.

use crate::support;

use std::process::{Child, Stdio};
use std::time::Duration;

use clawdbot::config::{DingTalkConfig, DingTalkMode, Secret};
use clawdbot::dingtalk::stream::StreamTuning;
use clawdbot::dingtalk::{Channel, ChannelTuning, InboundContent};
use clawdbot::sim::SimClient;
use serde_json::json;
use support::{free_port, wait_until, Home};
use tokio::sync::mpsc;

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(home: &Home, listen: &str) -> Served {
    let port_file = home
        .path()
        .join(format!("sim-{}.url", listen.replace([':', '.'], "_")));
    let _ = std::fs::remove_file(&port_file);
    let child = home
        .command(&[
            "sim",
            "serve",
            "--listen",
            listen,
            "--port-file",
            port_file.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sim");
    let mut base = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            base = std::fs::read_to_string(&port_file)
                .unwrap_or_default()
                .trim()
                .to_string();
            !base.is_empty()
        }),
        "sim wrote its port file"
    );
    Served { child, base }
}

#[test]
fn serve_inject_outbox_via_cli() {
    let home = Home::new();
    let sim = serve(&home, "127.0.0.1:0");
    let inj = home.run(&[
        "--json",
        "sim",
        "inject",
        "--sim",
        &sim.base,
        "--text",
        "hi",
        "--group",
        "--sender-staff-id",
        "s1",
    ]);
    assert_eq!(inj.code, 0, "{inj:?}");
    let msg_id = inj.json()["msg_id"].as_str().unwrap().to_string();
    assert!(msg_id.starts_with("msg"));
    // Reply through the session webhook like a bot would.
    let hook = inj.json()["session_webhook"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(&hook)
            .json(&json!({"msgtype": "text", "text": {"content": "pong"}}))
            .send()
            .await;
        r.unwrap().json::<serde_json::Value>().await.unwrap()["errcode"].clone()
    });
    assert_eq!(code, 0);
    let out = home.run(&[
        "--json",
        "sim",
        "outbox",
        "--sim",
        &sim.base,
        "--wait",
        "1",
        "--timeout",
        "10",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["entries"][0]["text"], "pong");
    assert_eq!(out.json()["entries"][0]["route"], "session_webhook");
    // A bare HOST:PORT is taken as http://HOST:PORT; nonsense is a usage error saying why.
    let bare = sim.base.trim_start_matches("http://");
    let out = home.run(&["--json", "sim", "outbox", "--sim", bare]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["entries"][0]["text"], "pong");
    let bad = home.run(&["sim", "outbox", "--sim", "ftp://127.0.0.1:1"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("--sim") && bad.stderr.contains("http://"),
        "{bad:?}"
    );
    assert!(!bad.stderr.contains("builder error"), "{bad:?}");
    // Waiting for more than there is fails within the timeout.
    let none = home.run(&[
        "sim",
        "outbox",
        "--sim",
        &sim.base,
        "--wait",
        "5",
        "--timeout",
        "1",
    ]);
    assert_eq!(none.code, 1);
    // The demo model is served under /demo/v1.
    let model = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/demo/v1/chat/completions", sim.base))
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await;
        r.unwrap().json::<serde_json::Value>().await.unwrap()
    });
    assert_eq!(model["choices"][0]["message"]["content"], "echo: x");
}

#[test]
fn channel_reconnects_after_the_sim_restarts() {
    let home = Home::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let sim = serve(&home, &listen);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = DingTalkConfig {
            client_id: clawdbot::sim::state::DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new(clawdbot::sim::state::DEFAULT_CLIENT_SECRET),
            robot_code: None,
            mode: DingTalkMode::Stream,
            api_base: sim.base.clone(),
            oapi_base: None,
            http_listen: "127.0.0.1:0".into(),
            card_template_id: None,
            card_content_key: "msgContent".into(),
            targets: Default::default(),
            send_rate: Default::default(),
            webhook_hosts: Vec::new(),
        };
        let tuning = ChannelTuning {
            stream: StreamTuning {
                keepalive_idle: Duration::from_millis(500),
                pong_timeout: Duration::from_secs(1),
                backoff_base: Duration::from_millis(100),
                backoff_cap: Duration::from_millis(400),
            },
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(8);
        let ch = Channel::start_with(cfg, tx, tuning).await.unwrap();
        let client = SimClient::new(&sim.base);
        let live = |v: &serde_json::Value| {
            v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["live"] == true))
        };
        client
            .wait_for("/_sim/connections", Duration::from_secs(10), live)
            .await
            .unwrap();
        drop(sim);
        let sim2 = serve(&home, &listen);
        client
            .wait_for("/_sim/connections", Duration::from_secs(15), live)
            .await
            .expect("reconnected to the new sim");
        client.inject_text("after restart", false).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.content, InboundContent::Text("after restart".into()));
        assert!(ch.report().reconnects >= 1);
        ch.shutdown().await;
        drop(sim2);
    });
}

/// `sim serve`'s banner shows the credentials it accepts (the demo's: public), and says
/// nothing about exposure on loopback; without `--sim` and no quickstart simulator the
/// other sim commands say what to pass; `inject --wait` with no bot ends at its bound
/// with exit 1 saying so.
#[test]
fn the_banner_shows_the_demo_credentials_and_inject_waits_bounded() {
    use clawdbot::sim::state::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
    let home = Home::new();
    let banner = home.path().join("banner.txt");
    let port_file = home.path().join("sim.url");
    // Another user's links at the temporary names next to the port file (a shared /tmp)
    // are never written through.
    let victim = home.write("victim", "precious");
    for planted in ["sim.tmp", "sim.url.tmp"] {
        std::os::unix::fs::symlink(&victim, home.path().join(planted)).unwrap();
    }
    let mut child = home
        .command(&["sim", "serve", "--port-file", port_file.to_str().unwrap()])
        .stdout(std::fs::File::create(&banner).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sim");
    let shown = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&banner).is_ok_and(|b| b.contains("client_secret"))
    });
    let text = std::fs::read_to_string(&banner).unwrap();
    let base = std::fs::read_to_string(&port_file).unwrap_or_default();
    let base = base.trim();
    let no_sim = home.run(&["sim", "outbox"]);
    let waited = home.run(&[
        "sim",
        "inject",
        "--sim",
        base,
        "--text",
        "nobody answers",
        "--wait",
        "--wait-timeout",
        "1",
    ]);
    let waited_json = home.run(&[
        "--json",
        "sim",
        "inject",
        "--sim",
        base,
        "--text",
        "nobody",
        "--wait",
        "--wait-timeout",
        "1",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(shown, "no credentials in the banner: {text}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(&port_file).unwrap().is_symlink());
    assert!(
        text.contains(&format!("client_id:     {DEFAULT_CLIENT_ID}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("client_secret: {DEFAULT_CLIENT_SECRET}")),
        "{text}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(no_sim.code, 2, "{no_sim:?}");
    assert!(
        no_sim.stderr.contains("--sim") && no_sim.stderr.contains("quickstart"),
        "{no_sim:?}"
    );
    assert_eq!(waited.code, 1, "{waited:?}");
    assert!(
        waited.stderr.contains("no reply from the bot") && waited.stderr.contains("within 1 s"),
        "{waited:?}"
    );
    // The timeout is kind `timeout` and shows no internal debug text.
    assert!(
        !waited.stderr.contains("Ok(") && !waited.stderr.contains("Object"),
        "{waited:?}"
    );
    assert_eq!(
        waited_json.json()["error"]["kind"],
        "timeout",
        "{waited_json:?}"
    );
    // A simulator that is not there is `unreachable` with exit 4, as the README says.
    let gone = home.run(&["--json", "sim", "outbox", "--sim", &support::dead_url()]);
    assert_eq!(gone.code, 4, "{gone:?}");
    assert_eq!(gone.json()["error"]["kind"], "unreachable", "{gone:?}");
    // A text message needs its text; an unknown message type is refused by name.
    let empty = home.run(&["sim", "inject", "--sim", base]);
    assert_eq!(empty.code, 2, "{empty:?}");
    assert!(empty.stderr.contains("--text"), "{empty:?}");
    let bogus = home.run(&[
        "sim",
        "inject",
        "--sim",
        base,
        "--msgtype",
        "bogus",
        "--text",
        "x",
    ]);
    assert_eq!(bogus.code, 2, "{bogus:?}");
    assert!(
        bogus.stderr.contains("bogus") && bogus.stderr.contains("richText"),
        "{bogus:?}"
    );
}

/// The product carries the quickstart echo model only: the scriptable fake model (its
/// control routes, its failure modes, its stored prompts) lives in the dev-only
/// `clawdbot-testkit` crate. Checked on the running simulator and on the binary's bytes.
#[test]
fn the_binary_serves_no_fake_model() {
    let home = Home::new();
    let sim = serve(&home, "127.0.0.1:0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    for (method, route) in [
        (reqwest::Method::POST, "_fake/config"),
        (reqwest::Method::GET, "_fake/stats"),
        (reqwest::Method::POST, "_fake/reset"),
    ] {
        let url = format!("{}/demo/v1/{route}", sim.base);
        let status = rt.block_on(async {
            http.request(method.clone(), &url)
                .json(&json!({"default": {"mode": "stall_before_headers"}}))
                .send()
                .await
                .expect("the simulator answers")
                .status()
        });
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{method} {route}");
    }
    let binary = std::fs::read(env!("CARGO_BIN_EXE_clawdbot")).expect("read the binary");
    for marker in ["/_fake/", "stall_before_headers", "fake mid-stream failure"] {
        assert!(
            !binary.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the product binary contains {marker:?}"
        );
    }
}
