//! `daemon status`: one daemon (LSB exit codes) or all of them.
//!
//! Exit codes with `--name`: 0 running, 3 not running, 1 dead with a stale pid file,
//! 4 cannot tell. Without `--name` every daemon that has a run folder is listed: 0 when
//! each of them runs, else the worst code among them (4 over 1 over 3); 3 when there is
//! none.
//!
//! [`connect`] gives `send` and `healthcheck` the same verdict and the same words.

use serde_json::{json, Value};

use super::output::Output;
use crate::cli::StatusArgs;
use crate::clock::now_ms;
use crate::daemon::{probe, Down, Probe};
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::ipc::client::{Client, ClientError};
use crate::ipc::{Request, Response};
use crate::paths::{DaemonPaths, Layout};
use crate::status::{
    channel_auth, ChannelReport, DaemonReport, JournalReport, ModelReport, ModelServiceReport,
};

pub(crate) fn status(layout: &Layout, args: &StatusArgs, out: &Output) -> CmdResult {
    let me = super::invocation(layout);
    if let Some(name) = &args.name {
        let mut seen = look_at(layout, name, &me)?;
        let Some(mut failure) = seen.failure.take() else {
            out.result(seen.doc, &seen.text);
            return Ok(Code::Ok);
        };
        if failure.code == Code::Usage {
            return Err(failure);
        }
        if let Some(demo) = super::quickstart::demo_invocation_for(layout, Some(name)) {
            failure = in_the_demo(failure, &demo, &format!("daemon status --name {name}"));
            seen.text.clone_from(&failure.message);
        } else if failure.code == Code::NotRunning {
            let others = other_daemons(layout, name);
            seen.text.push_str(&others);
            failure.message.push_str(&others);
        }
        return Ok(out.failed_result(seen.doc, &seen.text, &failure));
    }
    let all = layout
        .daemon_names()?
        .iter()
        .map(|name| look_at(layout, name, &me))
        .collect::<Result<Vec<Seen>, CliError>>()?;
    let failure =
        all_failure(&all, &me).map(|failure| {
            match super::quickstart::demo_invocation_for(layout, None) {
                Some(demo) => in_the_demo(failure, &demo, "daemon status"),
                None => failure,
            }
        });
    let text = if all.is_empty() {
        failure
            .as_ref()
            .map_or(String::new(), |f| f.message.clone())
    } else {
        all.iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let fields = json!({"daemons": all.into_iter().map(|s| s.doc).collect::<Vec<_>>()});
    Ok(match failure {
        Some(failure) => out.failed_result(fields, &text, &failure),
        None => {
            out.result(fields, &text);
            Code::Ok
        }
    })
}

/// One daemon by name; one that is not running has the start command as its fix.
fn look_at(layout: &Layout, name: &str, me: &str) -> Result<Seen, CliError> {
    let mut seen = one(&layout.daemon(name)?);
    seen.failure = seen.failure.map(|failure| match failure.kind {
        ErrorKind::NotRunning | ErrorKind::Dead => {
            failure.fix(format!("{me} daemon start --name {name}"))
        }
        _ => failure,
    });
    Ok(seen)
}

/// Why a list of daemons is not all well: the worst one's exit code, kind and fix, and a
/// message naming every daemon that is not running; `None` when each one runs. No daemon
/// at all is "not running" (exit 3).
fn all_failure(all: &[Seen], me: &str) -> Option<CliError> {
    if all.is_empty() {
        return Some(
            CliError::new(Code::NotRunning, "no daemons")
                .fix(format!("{me} daemon start --name NAME")),
        );
    }
    let failing: Vec<&CliError> = all.iter().filter_map(|s| s.failure.as_ref()).collect();
    let worst = failing.iter().copied().max_by_key(|f| severity(f.code))?;
    let names: Vec<String> = all
        .iter()
        .filter(|s| s.failure.is_some())
        .map(|s| {
            format!(
                "{} ({})",
                s.doc["name"].as_str().unwrap_or("?"),
                s.doc["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let failure = CliError::new(
        worst.code,
        format!(
            "{} of {} daemon(s) not running: {}",
            failing.len(),
            all.len(),
            names.join(", ")
        ),
    )
    .kind(worst.kind);
    Some(failure.fix_if(worst.fix.clone()))
}

/// How bad a status code is, for the list's exit code: cannot tell (4) over dead (1)
/// over not running (3) over running (0).
fn severity(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::NotRunning => 1,
        Code::Failure => 2,
        Code::Unknown => 3,
        Code::Usage => 4,
    }
}

/// One daemon as `daemon status` sees it. `doc` has the same shape in `status --name`
/// (its top level) and in the all-daemons list: `name`, `state`, `pid`, `last_error`
/// always, the running daemon's figures besides.
struct Seen {
    doc: Value,
    /// One line (more for a running daemon) of human text.
    text: String,
    /// Why it is not running well; `None` when it runs.
    failure: Option<CliError>,
}

fn one(paths: &DaemonPaths) -> Seen {
    match probe(paths) {
        Probe::Running { .. } => match fetch_report(paths) {
            Ok(report) => {
                let text = describe(&report);
                let mut doc = serde_json::to_value(&report).unwrap_or(Value::Null);
                doc["state"] = json!("running");
                Seen {
                    doc,
                    text,
                    failure: None,
                }
            }
            Err(e) => down(
                &paths.name,
                Down::Unresponsive {
                    pid: None,
                    reason: e.to_string(),
                },
            ),
        },
        Probe::Down(d) => down(&paths.name, d),
    }
}

/// A daemon that does not answer: its document, its line of text and its failure.
fn down(name: &str, why: Down) -> Seen {
    let (code, kind, state) = match &why {
        Down::Unresponsive { .. } => (Code::Unknown, ErrorKind::Unreachable, "unknown"),
        Down::Denied { .. } => (Code::Unknown, ErrorKind::Permission, "unknown"),
        Down::UnsafeFolder { .. } => (Code::Usage, ErrorKind::Permission, "unknown"),
        Down::Stale { .. } => (Code::Failure, ErrorKind::Dead, "dead"),
        Down::NotRunning => (Code::NotRunning, ErrorKind::NotRunning, "stopped"),
    };
    let unsafe_folder = matches!(why, Down::UnsafeFolder { .. });
    let (pid, reason) = match why {
        Down::Unresponsive { pid, reason } => (pid, Some(reason)),
        Down::Denied { reason } | Down::UnsafeFolder { reason } => (None, Some(reason)),
        Down::Stale { pid } => (pid, None),
        Down::NotRunning => (None, None),
    };
    let text = match (&reason, state) {
        (Some(reason), _) if unsafe_folder => format!("{name}: {reason}"),
        (Some(reason), _) => format!("{name}: cannot tell ({reason})"),
        (None, "dead") => format!(
            "{name}: dead (stale pid file, pid {})",
            pid.map_or_else(|| "?".to_string(), |p| p.to_string())
        ),
        (None, _) => format!("{name}: not running"),
    };
    Seen {
        doc: json!({"name": name, "state": state, "pid": pid, "last_error": reason}),
        failure: Some(CliError::new(code, text.clone()).kind(kind)),
        text,
    }
}

/// Connects to a running daemon for a command that needs one (`send`, `healthcheck`),
/// deciding through the same probe as `daemon status`: a daemon that is not running (or
/// dead) is exit 3 naming the command that starts it; one that cannot be reached is
/// exit 4 with the words `daemon status` prints.
pub(super) fn connect(layout: &Layout, paths: &DaemonPaths) -> Result<Client, CliError> {
    crate::daemon::probe::connect(paths).map_err(|why| {
        let seen = down(&paths.name, why);
        if let Some(demo) = super::quickstart::demo_invocation_for(layout, Some(&paths.name)) {
            let failure = CliError::new(Code::NotRunning, format!("{}: not here", paths.name));
            return in_the_demo(
                failure,
                &demo,
                &format!("daemon status --name {}", paths.name),
            );
        }
        let failure = seen
            .failure
            .unwrap_or_else(|| CliError::new(Code::Unknown, seen.text.clone()));
        match failure.code {
            Code::NotRunning | Code::Failure => {
                let start = format!(
                    "{} daemon start --name {}",
                    super::invocation(layout),
                    paths.name
                );
                CliError::new(
                    Code::NotRunning,
                    format!(
                        "{}; start it with: {start}{}",
                        seen.text,
                        other_daemons(layout, &paths.name)
                    ),
                )
                .kind(failure.kind)
                .fix(start)
            }
            _ => failure,
        }
    })
}

/// `failure` for a command typed without the `--home` of the quickstart demo, where what
/// it looked for lives: says so, and its fix is `demo_command` under the demo's home
/// (`demo`: the invocation with that `--home`).
fn in_the_demo(failure: CliError, demo: &str, demo_command: &str) -> CliError {
    let message = format!(
        "{} here; the quickstart demo runs under --home {} (add it: {demo} {demo_command})",
        failure.message.trim_end_matches(" here"),
        demo.rsplit_once(" --home ").map_or(demo, |(_, home)| home),
    );
    CliError::new(failure.code, message)
        .kind(failure.kind)
        .fix(format!("{demo} {demo_command}"))
}

/// For a `name` that is not running: the other daemons this layout knows, the running
/// ones first, and the closest name when one is close (`"; running: bot, sim; did you
/// mean `bot`?"`). Empty when there is no other daemon.
pub(super) fn other_daemons(layout: &Layout, name: &str) -> String {
    let others: Vec<String> = layout
        .daemon_names()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n != name)
        .collect();
    if others.is_empty() {
        return String::new();
    }
    let running = |n: &String| {
        layout
            .daemon(n)
            .is_ok_and(|p| matches!(probe(&p), Probe::Running { .. }))
    };
    let (up, down): (Vec<&String>, Vec<&String>) = others.iter().partition(|n| running(n));
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let mut text = String::new();
    if !up.is_empty() {
        text.push_str(&format!("; running: {}", join(&up)));
    }
    if !down.is_empty() {
        text.push_str(&format!("; stopped: {}", join(&down)));
    }
    if let Some(n) = crate::suggest::closest(name, others.iter().map(String::as_str)) {
        text.push_str(&format!("; did you mean --name {n}?"));
    }
    text
}

fn fetch_report(paths: &DaemonPaths) -> Result<DaemonReport, ClientError> {
    let mut client = Client::connect(
        &crate::daemon::probe::control_socket(paths),
        crate::daemon::probe::PROBE_TIMEOUT,
    )?;
    match client.request(&Request::Status)? {
        Response::Status(r) => Ok(*r),
        other => Err(ClientError::unexpected(&other)),
    }
}

/// The human form of one daemon's report: a header, then one line per part it has.
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
    lines.extend(r.channel.as_ref().map(channel_line));
    lines.extend(r.delivery.as_ref().map(|d| {
        format!(
            "  delivery: retrying {}, redelivered {}, given up {}, left pending {}, cards closed after restart {}",
            d.replies_retrying,
            d.replies_redelivered,
            d.replies_given_up,
            d.replies_left_pending,
            d.cards_closed_after_restart
        )
    }));
    lines.extend(r.busy_replies.as_ref().map(|b| {
        format!(
            "  busy replies: {} ({} waited behind their conversation, {} came to a full line, {} model queue; {} not sent, past DingTalk's send rate)",
            b.total, b.behind_conversation, b.line_full, b.model_queue, b.not_sent
        )
    }));
    lines.extend(r.state.as_ref().map(state_line));
    for m in &r.models {
        lines.push(model_line(m));
        lines.extend(replica_lines(m));
    }
    lines.extend(r.journal.as_ref().map(journal_line));
    if let Some(s) = &r.model_service {
        let label = if r.workload == "sim" {
            "simulator"
        } else {
            "model service"
        };
        lines.extend(model_service_lines(label, s));
    }
    if let Some(e) = &r.last_error {
        lines.push(format!("  last error: {e}"));
    }
    lines.join("\n")
}

/// `, last error: E`, or nothing.
fn last_error_suffix(e: &Option<String>) -> String {
    e.as_ref()
        .map(|e| format!(", last error: {e}"))
        .unwrap_or_default()
}

/// A figure, or `-` when there is none yet.
fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn channel_line(c: &ChannelReport) -> String {
    format!(
        "  channel: {} ({}{}), reconnects {}, in {}, out {}, duplicates dropped {}{}",
        c.state,
        c.mode,
        match c.auth.as_str() {
            channel_auth::REFUSED => ", credentials REFUSED",
            channel_auth::PENDING => ", not authenticated yet",
            _ => "",
        },
        c.reconnects,
        c.messages_in,
        c.messages_out,
        c.duplicates_dropped,
        last_error_suffix(&c.last_error)
    )
}

fn model_line(m: &ModelReport) -> String {
    // With several replicas a turn may make several requests: say that `failures`
    // counts requests, and how many of them were retried (and maybe answered) elsewhere.
    let failures = if m.replicas.len() > 1 {
        format!(
            "{} (requests; {} retried on another replica)",
            m.failures, m.replica_retries
        )
    } else {
        m.failures.to_string()
    };
    let global = m
        .global_in_flight
        .map(|g| format!(" (all replicas: {g}/{})", m.limit))
        .unwrap_or_default()
        + &m.global_limit_conflict
            .as_deref()
            .map(|c| format!(" [LIMIT CONFLICT: {c}]"))
            .unwrap_or_default();
    format!(
        "  model {}: {}/{} in flight{global}, {} queued, served {}, failures {}, timeouts {}, fallbacks {}, busy {}, p50 {} ms, p95 {} ms{}",
        m.name,
        m.in_flight,
        m.limit,
        m.queued,
        m.served,
        failures,
        m.timeouts,
        m.fallbacks,
        m.busy_rejections,
        or_dash(m.p50_ms),
        or_dash(m.p95_ms),
        last_error_suffix(&m.last_error)
    )
}

/// One line per replica of a model served by several (none for a single `base_url`).
fn replica_lines(m: &ModelReport) -> Vec<String> {
    if m.replicas.len() < 2 {
        return Vec::new();
    }
    m.replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "    replica {i} {}: {}/{} in flight, {}, served {}, failures {}",
                r.base_url, r.in_flight, r.limit, r.state, r.served, r.failures
            )
        })
        .collect()
}

fn journal_line(j: &JournalReport) -> String {
    format!(
        "  journal: {} pending, {} commits, {} not stored, {} answered-marks to retry, reply->mark p99 {} us{}",
        j.pending,
        j.commits,
        j.failed_accepts,
        j.done_retry_queue,
        or_dash(j.done_window_us_p99),
        last_error_suffix(&j.last_error)
    )
}

/// The supervised process's lines, each starting with `label` (`model service`, or
/// `simulator` for quickstart's DingTalk simulator).
fn model_service_lines(label: &str, s: &ModelServiceReport) -> Vec<String> {
    let state = match s.state.as_str() {
        "failing" => format!("FAILING ({} exits in the last minute)", s.recent_exits),
        "" => "-".to_string(),
        other => other.to_string(),
    };
    let mut lines = vec![format!(
        "  {label}: {state}: {} (child pid {}, restarts {}, healthy {})",
        s.command,
        or_dash(s.child_pid),
        s.restarts,
        or_dash(s.healthy)
    )];
    if let Some(how) = &s.last_exit {
        let ago = s
            .last_exit_at_ms
            .map(|at| format!(", {} s ago", now_ms().saturating_sub(at) / 1000))
            .unwrap_or_default();
        lines.push(format!("  {label} last exit: {how}{ago}"));
    }
    lines
}

/// `  state: redis at host:port (ok), replica r1, 3 replicas alive` (or `state: local`).
fn state_line(s: &crate::status::StateReport) -> String {
    let Some(server) = &s.redis_server else {
        return format!("  state: {}", s.backend);
    };
    format!(
        "  state: {} at {} ({}), replica {}, {} replicas alive",
        s.backend,
        server,
        match (&s.intake_error, s.redis_ok) {
            (Some(kind), _) => format!("INTAKE FAILING: {kind}"),
            (None, Some(true)) => "ok".to_string(),
            (None, _) => "NOT ANSWERING".to_string(),
        },
        s.replica_id.as_deref().unwrap_or("-"),
        s.alive_replicas.unwrap_or(0)
    )
}
