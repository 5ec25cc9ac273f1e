//! A supervised model service (`daemon start --exec "CMD ARGS" [--health-url URL]`): any
//! model runtime command (llama-server, vllm serve, ...) run under the same pid, log,
//! status and stop machinery as the bot, in a daemon of its own so that bot and model service
//! restart independently.
//!
//! - [`crate::cmdline`]: shell-like splitting (no shell), program lookup, and the command as
//!   shown in status and logs (secret flag values masked);
//! - [`exec_file`]: `--exec-file`, the command line (and health URL) read from a file;
//! - [`child`]: one run of the command in its own process group, output into the log;
//! - [`supervisor`]: restart with capped exponential backoff ([`crate::backoff`], shared with
//!   the channel and the bot);
//! - [`health`]: the optional health URL, polled in the background;
//! - [`state`]: the figures `status` reports.
//!
//! Invariants: a command line that does not parse or names no executable program is
//! refused by `daemon start` before it forks (exit 2); [`ModelService::start`] fails (and so
//! does `daemon start`, exit 1) unless the first child was spawned; after [`Workload::shutdown`] begins no child is started, and
//! it returns only once the child's whole process group is gone (or SIGKILL was sent and
//! waited for).

pub(crate) mod child;
pub(crate) mod exec_file;
pub(crate) mod health;
pub(crate) mod state;
pub(crate) mod supervisor;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::daemon::workload::{WorkError, Workload};
use crate::ipc::proto::{Check, CheckStatus, HealthReport, SendOutcome};
use crate::status::{DaemonReport, ModelServiceReport};
use futures_util::future::BoxFuture;

use crate::backoff::BackoffPolicy;
use crate::cmdline::CommandLine;
use child::RunningChild;
use health::{HealthProbe, HealthUrlError};
use state::ModelServiceState;
use supervisor::Supervisor;

/// Extra time `shutdown` waits beyond the drain for SIGKILL and reaping.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(7);

/// The model service workload of a daemon.
pub(crate) struct ModelService {
    /// Daemon name, for the fixes printed by health checks.
    name: String,
    /// The command as it may be shown ([`CommandLine::display`]).
    command: String,
    state: Arc<ModelServiceState>,
    probe: Option<HealthProbe>,
    /// `Some(drain)` once shutdown began.
    stop: watch::Sender<Option<Duration>>,
    /// The restart loop; taken (and awaited) by the first shutdown.
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The health poller; aborted on shutdown.
    poller: Option<JoinHandle<()>>,
    /// What `daemon status` calls it ([`Workload::kind`]): `gateway` unless relabelled.
    kind: &'static str,
}

/// Why the supervised process could not start (printed by `daemon start` in one line).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelServiceStartError {
    #[error(transparent)]
    Command(#[from] crate::cmdline::CommandError),
    #[error(transparent)]
    HealthUrl(#[from] HealthUrlError),
    #[error("--exec: cannot run {}: {source}", program.display())]
    Spawn {
        program: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<ModelServiceStartError> for crate::exit::CliError {
    fn from(e: ModelServiceStartError) -> Self {
        crate::exit::CliError::failure(e.to_string())
    }
}

impl ModelService {
    /// Parses `cmd`, starts the first child and its supervisor (and the health poller when
    /// `health_url` is set). Must run inside the daemon's tokio runtime. The error names
    /// the problem (empty or unparsable command, program not found, spawn failure, bad
    /// URL) in one line for `daemon start` to print.
    pub(crate) async fn start(
        name: &str,
        cmd: &str,
        health_url: Option<String>,
    ) -> Result<ModelService, ModelServiceStartError> {
        let command = CommandLine::parse(cmd)?;
        let probe = health_url.as_deref().map(HealthProbe::new).transpose()?;
        let first =
            RunningChild::spawn(&command).map_err(|source| ModelServiceStartError::Spawn {
                program: command.program.clone(),
                source,
            })?;
        let state = Arc::new(ModelServiceState::default());
        state.child_started(first.pid());
        let (stop, stop_rx) = watch::channel(None);
        let supervisor = Supervisor {
            cmd: command.clone(),
            state: state.clone(),
            stop: stop_rx,
            policy: BackoffPolicy::default(),
        };
        let supervisor = tokio::spawn(supervisor.run(first));
        let poller = probe.clone().map(|p| tokio::spawn(p.poll(state.clone())));
        Ok(ModelService {
            name: name.to_string(),
            command: command.display,
            state,
            probe,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
            poller,
            kind: "gateway",
        })
    }

    /// Reports this supervised process as `kind` (e.g. `sim` for the simulator, which is
    /// not a model gateway).
    pub(crate) fn labelled(mut self, kind: &'static str) -> ModelService {
        self.kind = kind;
        self
    }

    fn process_check(&self) -> Check {
        let s = self.state.snapshot();
        if s.failing() {
            return Check {
                name: "gateway process".into(),
                status: CheckStatus::Fail,
                detail: format!(
                    "failing: exited {} times within {} s ({} restart(s), last exit: {})",
                    s.recent_exits,
                    state::FAILING_WINDOW.as_secs(),
                    s.restarts,
                    s.last_exit.as_deref().unwrap_or("none")
                ),
                fix: Some(format!(
                    "read why it exits: clawdbot daemon logs --name {}; fix the command, then clawdbot daemon restart --name {}",
                    self.name, self.name
                )),
            };
        }
        match s.child_pid {
            Some(pid) => Check {
                name: "gateway process".into(),
                status: CheckStatus::Ok,
                detail: match &s.last_exit {
                    Some(how) => format!("pid {pid} running; {} restart(s), last exit: {how}", s.restarts),
                    None => format!("pid {pid} running; {} restart(s)", s.restarts),
                },
                fix: None,
            },
            None => Check {
                name: "gateway process".into(),
                status: CheckStatus::Fail,
                detail: format!(
                    "not running ({}); {} restart(s)",
                    s.last_exit.as_deref().unwrap_or("no exit recorded"),
                    s.restarts
                ),
                fix: Some(format!(
                    "read its output: clawdbot daemon logs --name {} (it is restarted with backoff)",
                    self.name
                )),
            },
        }
    }
}

impl Workload for ModelService {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn fill_report(&self, report: &mut DaemonReport) {
        let s = self.state.snapshot();
        report.model_service = Some(ModelServiceReport {
            command: self.command.clone(),
            state: s.state().to_string(),
            child_pid: s.child_pid,
            restarts: s.restarts,
            recent_exits: s.recent_exits as u64,
            last_exit_at_ms: s.last_exit_at_ms,
            last_exit: s.last_exit,
            health_url: self.probe.as_ref().map(|p| p.shown_url().to_string()),
            healthy: s.healthy,
        });
    }

    /// The process check, and a live GET of the health URL bounded by `timeout`.
    fn health(&self, timeout: Duration) -> BoxFuture<'_, HealthReport> {
        Box::pin(async move {
            let mut checks = vec![self.process_check()];
            if let Some(probe) = &self.probe {
                let r = probe.probe(timeout).await;
                self.state.set_healthy(r.healthy);
                checks.push(Check {
                    name: "gateway health URL".into(),
                    status: if r.healthy {
                        CheckStatus::Ok
                    } else {
                        CheckStatus::Fail
                    },
                    detail: r.detail,
                    fix: r.fix,
                });
            }
            HealthReport { checks }
        })
    }

    fn send(
        &self,
        _to: String,
        _text: String,
        _markdown: bool,
    ) -> BoxFuture<'_, Result<SendOutcome, WorkError>> {
        Box::pin(async {
            Err(WorkError::unsupported(
                "this daemon supervises a model service and cannot send messages; send through the bot daemon",
            ))
        })
    }

    /// SIGTERM to the child's process group, up to `drain` for it to exit, then SIGKILL.
    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.send_replace(Some(drain));
            if let Some(poller) = &self.poller {
                poller.abort();
            }
            let task = self
                .supervisor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(task) = task {
                match tokio::time::timeout(drain + SHUTDOWN_SLACK, task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "model service supervisor failed"),
                    Err(_) => {
                        tracing::error!("model service supervisor did not finish stopping in time")
                    }
                }
            }
        })
    }
}
