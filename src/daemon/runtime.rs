//! Running a daemon in the current process (`daemon run`, or the detached child of
//! `daemon start`).
//!
//! Order matters: take the pid lock, load the config, open the log, and only then build
//! the tokio runtime (no threads exist before this point, so forking earlier was safe).
//! Readiness (`READY=1` for systemd, a line on the ready pipe for `daemon start`) is
//! reported only once the control socket is bound and the workload has started.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{self, Config, LoggingConfig};
use crate::exit::{CliError, Code};
use crate::logging;
use crate::paths::{ensure_parent, DaemonPaths};

use super::control::{self, ControlState, DaemonInfo};
use super::launch::Launch;
use super::pidfile::PidLock;
use super::sdnotify;
use super::workload::Workload;

/// Drain budget when the daemon is stopped by SIGTERM or SIGINT.
pub const SIGNAL_DRAIN: Duration = Duration::from_secs(10);

/// Where the daemon reports "ready" or its startup error.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// A pipe descriptor inherited from `daemon start` (or none for a foreground run).
    pub fn from_fd(fd: Option<i32>) -> ReadyPipe {
        // SAFETY: the fd was created by `daemon start` for us and is not used elsewhere.
        ReadyPipe(fd.map(|fd| unsafe { File::from_raw_fd(fd) }))
    }

    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
    }

    pub fn ready(&mut self) {
        self.send(&format!("READY {}", std::process::id()));
    }

    pub fn failed(&mut self, message: &str) {
        self.send(&format!("ERROR {message}"));
    }
}

/// Runs the daemon until it is asked to stop. Startup errors go to the ready pipe (and
/// stderr) and decide the exit code.
pub fn run(paths: &DaemonPaths, launch: &Launch, mut ready: ReadyPipe) -> Result<Code, CliError> {
    let result = start_and_serve(paths, launch, &mut ready);
    if let Err(e) = &result {
        ready.failed(&e.message);
    }
    result
}

fn start_and_serve(
    paths: &DaemonPaths,
    launch: &Launch,
    ready: &mut ReadyPipe,
) -> Result<Code, CliError> {
    paths.ensure_run_dir()?;
    let lock = PidLock::acquire(&paths.pid_file)
        .map_err(|e| crate::paths::io_error("lock", &paths.pid_file, e))?
        .ok_or_else(|| CliError::failure(format!("daemon {:?} is already running", paths.name)))?;

    let config = match (&launch.config, &launch.exec) {
        (Some(path), None) => Some(config::load(path)?),
        (Some(path), Some(_)) if path.exists() => Some(config::load(path)?),
        _ => None,
    };
    let log_cfg = config
        .as_ref()
        .map(|c| c.logging.clone())
        .unwrap_or_else(LoggingConfig::default);
    ensure_parent(&launch.log)?;
    let (guard, last_error) = logging::init(&launch.log, &log_cfg)
        .map_err(|e| crate::paths::io_error("open log file", &launch.log, e))?;
    if let Some(path) = &launch.config {
        for w in config::permission_warnings(path) {
            tracing::warn!("{w}");
        }
    }

    // We hold the pid lock, so no live daemon of this name owns the socket file.
    let _ = std::fs::remove_file(&paths.socket);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("clawdbot-daemon")
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve(paths, launch, config, last_error, ready));
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(&paths.socket);
    drop(guard);
    lock.release();
    result
}

async fn serve(
    paths: &DaemonPaths,
    launch: &Launch,
    config: Option<Config>,
    last_error: logging::LastError,
    ready: &mut ReadyPipe,
) -> Result<Code, CliError> {
    let listener = UnixListener::bind(&paths.socket)
        .map_err(|e| crate::paths::io_error("listen on", &paths.socket, e))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| crate::paths::io_error("set mode 0600 on", &paths.socket, e))?;

    let workload = build_workload(paths, launch, config).await.map_err(|e| {
        tracing::error!("startup failed: {e}");
        CliError::failure(e)
    })?;
    let (shutdown_tx, mut shutdown_rx) = watch::channel(None::<Duration>);
    let state = Arc::new(ControlState {
        info: DaemonInfo {
            name: paths.name.clone(),
            config_path: launch.config.as_ref().map(|p| p.display().to_string()),
            log_path: launch.log.display().to_string(),
            socket: paths.socket.display().to_string(),
            started_at_ms: now_ms(),
            started: Instant::now(),
            last_error,
        },
        workload: workload.clone(),
        shutdown: shutdown_tx.clone(),
    });
    let server = tokio::spawn(control::serve(listener, state));

    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;

    tracing::info!(name = %paths.name, pid = std::process::id(), workload = workload.kind(), "daemon ready");
    ready.ready();
    sdnotify::notify("READY=1");

    let drain = loop {
        tokio::select! {
            _ = term.recv() => break SIGNAL_DRAIN,
            _ = int.recv() => break SIGNAL_DRAIN,
            _ = usr1.recv() => {
                logging::request_reopen();
                tracing::info!("log file reopened (SIGUSR1)");
            }
            _ = hup.recv() => match workload.reload().await {
                Ok(()) => tracing::info!(resolved = "config_reload", "config reloaded (SIGHUP)"),
                Err(e) => tracing::error!(topic = "config_reload", "config reload failed, keeping the old config: {e}"),
            },
            changed = shutdown_rx.changed() => {
                if changed.is_err() { break SIGNAL_DRAIN; }
                if let Some(d) = *shutdown_rx.borrow() { break d; }
            }
        }
    };
    let _ = shutdown_tx.send(Some(drain));
    sdnotify::notify("STOPPING=1");
    tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down");
    tokio::select! {
        _ = workload.shutdown(drain) => {}
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting without draining"),
        _ = int.recv() => tracing::warn!("second SIGINT: exiting without draining"),
    }
    server.abort();
    tracing::info!("daemon stopped");
    Ok(Code::Ok)
}

async fn build_workload(
    paths: &DaemonPaths,
    launch: &Launch,
    config: Option<Config>,
) -> Result<Arc<dyn Workload>, String> {
    match &launch.exec {
        Some(cmd) => crate::gateway::Gateway::start(&launch.name, cmd, launch.health_url.clone())
            .await
            .map(|g| Arc::new(g) as Arc<dyn Workload>),
        None => {
            let config = config.ok_or("a bot needs a config file")?;
            let config_path = launch.config.clone().ok_or("a bot needs a config file")?;
            crate::bot::Bot::start(config, config_path, paths.clone())
                .await
                .map(|b| Arc::new(b) as Arc<dyn Workload>)
        }
    }
}

fn signal_err(e: std::io::Error) -> CliError {
    CliError::failure(format!("cannot install signal handlers: {e}"))
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
