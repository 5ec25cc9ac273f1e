//! `daemon status`: one daemon (LSB exit codes) or all of them.
//!
//! Exit codes with `--name`: 0 running, 3 not running, 1 dead with a stale pid file,
//! 4 cannot tell. Without `--name`: 0 when every listed daemon runs (or none exist), else
//! the worst code among them.

use serde_json::{json, Value};

use super::output::Output;
use crate::cli::StatusArgs;
use crate::daemon::{probe, Probe};
use crate::exit::{CmdResult, Code};
use crate::ipc::client::Client;
use crate::ipc::{Request, Response};
use crate::paths::{DaemonPaths, Layout};
use crate::status::DaemonReport;

pub fn status(layout: &Layout, args: &StatusArgs, out: &Output) -> CmdResult {
    let names = match &args.name {
        Some(n) => vec![n.clone()],
        None => layout.daemon_names(),
    };
    let mut docs = Vec::new();
    let mut human = Vec::new();
    let mut worst = Code::Ok;
    for name in &names {
        let paths = layout.daemon(name)?;
        let (code, doc, text) = one(&paths);
        if rank(code) > rank(worst) {
            worst = code;
        }
        docs.push(doc);
        human.push(text);
    }
    if args.name.is_some() {
        out.result(docs.pop().unwrap_or(Value::Null), &human.join("\n"));
    } else {
        let text = if human.is_empty() {
            "no daemons".to_string()
        } else {
            human.join("\n")
        };
        out.result(json!({"daemons": docs}), &text);
    }
    Ok(worst)
}

fn rank(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::NotRunning => 1,
        Code::Failure => 2,
        Code::Unknown => 3,
        Code::Usage => 4,
    }
}

fn one(paths: &DaemonPaths) -> (Code, Value, String) {
    let name = &paths.name;
    match probe(paths) {
        Probe::Running { .. } => match fetch_report(paths) {
            Ok(report) => {
                let text = describe(&report);
                let mut doc = serde_json::to_value(&report).unwrap_or(Value::Null);
                doc["state"] = json!("running");
                (Code::Ok, doc, text)
            }
            Err(reason) => unknown(name, None, reason),
        },
        Probe::Unresponsive { pid, reason } => unknown(name, pid, reason),
        Probe::Denied { reason } => unknown(name, None, reason),
        Probe::Stale { pid } => (
            Code::Failure,
            json!({"name": name, "state": "dead", "pid": pid}),
            format!(
                "{name}: dead (stale pid file, pid {})",
                pid.map(|p| p.to_string()).unwrap_or("?".into())
            ),
        ),
        Probe::NotRunning => (
            Code::NotRunning,
            json!({"name": name, "state": "stopped"}),
            format!("{name}: not running"),
        ),
    }
}

fn unknown(name: &str, pid: Option<u32>, reason: String) -> (Code, Value, String) {
    (
        Code::Unknown,
        json!({"name": name, "state": "unknown", "pid": pid, "last_error": reason}),
        format!("{name}: cannot tell ({reason})"),
    )
}

fn fetch_report(paths: &DaemonPaths) -> Result<DaemonReport, String> {
    let mut client = Client::connect(&paths.socket, crate::daemon::probe::PROBE_TIMEOUT)
        .map_err(|e| e.to_string())?;
    match client
        .request(&Request::Status)
        .map_err(|e| e.to_string())?
    {
        Response::Status(r) => Ok(*r),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn describe(r: &DaemonReport) -> String {
    let mut lines = vec![format!(
        "{}: running (pid {}, {} v{}, up {}s)\n  config: {}\n  log:    {}\n  socket: {}",
        r.name,
        r.pid,
        r.workload,
        r.version,
        r.uptime_secs,
        r.config_path.as_deref().unwrap_or("-"),
        r.log_path,
        r.socket
    )];
    if let Some(c) = &r.channel {
        lines.push(format!(
            "  channel: {} ({}), reconnects {}, in {}, out {}, duplicates dropped {}{}",
            c.state,
            c.mode,
            c.reconnects,
            c.messages_in,
            c.messages_out,
            c.duplicates_dropped,
            c.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        ));
    }
    for m in &r.models {
        lines.push(format!(
            "  model {}: {}/{} in flight, {} queued, served {}, timeouts {}, fallbacks {}, busy {}, p50 {} ms, p95 {} ms",
            m.name,
            m.in_flight,
            m.limit,
            m.queued,
            m.served,
            m.timeouts,
            m.fallbacks,
            m.busy_rejections,
            m.p50_ms.map(|v| v.to_string()).unwrap_or("-".into()),
            m.p95_ms.map(|v| v.to_string()).unwrap_or("-".into())
        ));
    }
    if let Some(g) = &r.gateway {
        lines.push(format!(
            "  gateway: {} (child pid {}, restarts {}, healthy {})",
            g.command,
            g.child_pid.map(|p| p.to_string()).unwrap_or("-".into()),
            g.restarts,
            g.healthy.map(|h| h.to_string()).unwrap_or("-".into())
        ));
    }
    if let Some(e) = &r.last_error {
        lines.push(format!("  last error: {e}"));
    }
    lines.join("\n")
}
