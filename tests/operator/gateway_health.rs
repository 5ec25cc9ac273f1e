//! `daemon start --exec ... --health-url URL`: the health URL of a live runtime
//! (python's http.server on 127.0.0.1) is reported healthy; a dead port unhealthy, in
//! `status` and in the live health checks.

use crate::support;

use std::time::Duration;

use clawdbot::ipc::client::Client;
use clawdbot::ipc::proto::{CheckStatus, HealthReport};
use clawdbot::ipc::{Request, Response};
use serde_json::Value;
use support::{free_port, wait_until, Home};

/// Bound for every wait on the daemon, the child or a poll.
const WAIT: Duration = Duration::from_secs(20);

fn healthy(home: &Home, name: &str) -> Option<bool> {
    let run = home.run(&["--json", "daemon", "status", "--name", name]);
    if run.code != 0 {
        return None;
    }
    run.json()
        .get("gateway")
        .and_then(|g| g.get("healthy"))
        .and_then(Value::as_bool)
}

fn live_checks(home: &Home, name: &str) -> HealthReport {
    let socket = home.run_dir(name).join("control.sock");
    let mut client = Client::connect(&socket, WAIT).expect("connect to the control socket");
    client.set_timeout(WAIT);
    match client
        .request(&Request::Health { timeout_ms: 3000 })
        .expect("health answer")
    {
        Response::Health(h) => h,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn start(home: &Home, name: &str, exec: &str, url: &str) -> support::Run {
    home.run(&[
        "daemon",
        "start",
        "--name",
        name,
        "--exec",
        exec,
        "--health-url",
        url,
        "--timeout",
        "15",
    ])
}

#[test]
fn live_http_server_is_healthy() {
    let home = Home::new();
    let port = free_port();
    let exec = format!("python3 -m http.server {port} --bind 127.0.0.1");
    let url = format!("http://127.0.0.1:{port}/");
    let run = start(&home, "gw", &exec, &url);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        wait_until(WAIT, || healthy(&home, "gw") == Some(true)),
        "never healthy"
    );
    let report = live_checks(&home, "gw");
    let names: Vec<_> = report
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect();
    assert_eq!(
        names,
        [
            ("gateway process", CheckStatus::Ok),
            ("gateway health URL", CheckStatus::Ok)
        ],
        "{report:?}"
    );
    assert!(report.checks[1].detail.contains("200"), "{report:?}");
    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
}

#[test]
fn dead_port_is_unhealthy_with_a_fix() {
    let home = Home::new();
    let url = format!("http://127.0.0.1:{}/health", free_port());
    let run = start(&home, "gw", "sleep 600", &url);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        wait_until(WAIT, || healthy(&home, "gw") == Some(false)),
        "never reported unhealthy"
    );
    let report = live_checks(&home, "gw");
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "gateway health URL")
        .expect("a URL check");
    assert_eq!(check.status, CheckStatus::Fail, "{report:?}");
    assert!(
        check.fix.as_deref().is_some_and(|f| !f.contains('\n')),
        "{report:?}"
    );
}

#[test]
fn bad_health_url_fails_start() {
    let home = Home::new();
    let run = start(&home, "gw", "sleep 600", "ftp://127.0.0.1/");
    // Checked before the fork: a usage error naming --health-url.
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--health-url"), "{run:?}");
}
