//! `clawdbot healthcheck`: checks in the order an operator troubleshoots — the daemon
//! answers, the channel is connected, each model endpoint is healthy (and how fast),
//! concurrency saturation, prompt sizes near the budget. Each check is ok / warn / fail
//! with a one-line fix. Exit 0 healthy (warnings allowed), 1 unhealthy, 3 not running,
//! 4 cannot tell (decided as `daemon status` decides).
//!
//! With `--config F` and no daemon it is a pre-flight: the config loads, the model
//! endpoints answer and the DingTalk credentials obtain a token.

use std::time::Duration;

use serde_json::json;

use super::output::Output;
use crate::cli::HealthcheckArgs;
use crate::config::Config;
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::ipc::client::ClientError;
use crate::ipc::proto::{Check, CheckStatus, HealthReport};
use crate::ipc::{Request, Response};
use crate::paths::Layout;

pub(crate) fn healthcheck(layout: &Layout, args: &HealthcheckArgs, out: &Output) -> CmdResult {
    let timeout = Duration::from_secs(args.timeout.max(1));
    // What was checked: a daemon by `name`, or a config file before any daemon runs.
    let (name, config_path, report) = match (&args.name, &args.config) {
        (_, Some(path)) => {
            let config = crate::config::load(path)?;
            let mut report = HealthReport::default();
            report
                .checks
                .push(ok("config", format!("{} loads", path.display())));
            report.checks.extend(preflight(&config, timeout, out)?);
            (None, Some(path.display().to_string()), report)
        }
        (Some(name), None) => (
            Some(name.clone()),
            None,
            daemon_checks(layout, name, timeout, out)?,
        ),
        (None, None) => {
            let names = layout.daemon_names()?;
            match names.as_slice() {
                [only] => (
                    Some(only.clone()),
                    None,
                    daemon_checks(layout, only, timeout, out)?,
                ),
                _ => {
                    return Err(CliError::usage(
                        "pass --name NAME (or --config FILE for a pre-flight check)",
                    ))
                }
            }
        }
    };
    let text = render_checks(out, &report.checks);
    let fields = json!({"name": name, "config_path": config_path, "checks": report.checks});
    Ok(match failed_checks(&report.checks) {
        Some(failure) => out.failed_result(fields, &text, &failure),
        None => {
            out.result(fields, &text);
            Code::Ok
        }
    })
}

/// The failure of a list of checks (exit 1, kind `check_failed`) naming the failed ones,
/// with the first one's fix; `None` when none failed (warnings pass).
pub(crate) fn failed_checks(checks: &[Check]) -> Option<CliError> {
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    let first = failed.first()?;
    let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
    let failure = CliError::failure(format!(
        "{} check(s) failed: {}",
        failed.len(),
        names.join(", ")
    ))
    .kind(ErrorKind::CheckFailed);
    Some(failure.fix_if(first.fix.clone()))
}

/// The pre-flight checks of `config` without a daemon (model endpoints, DingTalk
/// credentials), each announced on stderr as it starts and ends (a runtime of its own:
/// the CLI runs no tokio runtime otherwise).
pub(crate) fn preflight(
    config: &Config,
    timeout: Duration,
    out: &Output,
) -> Result<Vec<Check>, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let progress = |event: crate::bot::CheckProgress<'_>| out.check_progress(event);
    Ok(rt
        .block_on(crate::bot::preflight_checks(config, timeout, &progress))
        .checks)
}

fn ok(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        status: CheckStatus::Ok,
        detail,
        fix: None,
    }
}

/// Asks a running daemon for its checks, prefixed by the "daemon answers" check.
fn daemon_checks(
    layout: &Layout,
    name: &str,
    timeout: Duration,
    out: &Output,
) -> Result<HealthReport, CliError> {
    let paths = layout.daemon(name)?;
    let mut client = super::daemon_status::connect(layout, &paths)?;
    client.set_timeout(timeout + Duration::from_secs(2));
    out.note(&format!(
        "asking {name} for its checks (up to {} s)...",
        timeout.as_secs()
    ));
    let mut report = HealthReport::default();
    report.checks.push(ok(
        "daemon",
        format!(
            "{name} answers (pid {}, v{})",
            client.daemon_pid, client.daemon_version
        ),
    ));
    let req = Request::Health {
        timeout_ms: timeout.as_millis() as u64,
    };
    match client.request(&req)? {
        Response::Health(h) => report.checks.extend(h.checks),
        other => return Err(ClientError::unexpected(&other).into()),
    }
    Ok(report)
}

/// The checks for a person: one line each (`ok`, `warn`, `FAIL`, name, detail), then the
/// fix indented under it. The one renderer for `healthcheck` and `onboard`.
pub(crate) fn render_checks(out: &Output, checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    checks
        .iter()
        .map(|c| {
            let tag = out.check_tag(c.status);
            let mut line = format!("{tag}  {:width$}  {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                line.push_str(&format!("\n      {:width$}  fix: {fix}", ""));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
