//! Running a daemon in the current process (`daemon run`, or the detached child of
//! `daemon start`).
//!
//! Order matters: take the pid lock, load the config, open the log, and only then build
//! the tokio runtime (no threads exist before this point, so forking earlier was safe).
//! Readiness (`READY=1` for systemd, a line on the ready pipe for `daemon start`) is
//! reported only once the control socket is bound and the workload has started.
//!
//! Invariants: the [`Claim`] (pid file and socket) is dropped on every way out, so a
//! daemon that fails before ready leaves no pid file or socket behind; SIGTERM/SIGINT
//! while the workload starts ends the daemon cleanly; while it runs, the claim is healed
//! every [`HEAL_INTERVAL`].

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::{self, Config, LoggingConfig};
use crate::exit::{CliError, Code};
use crate::logging;
use crate::paths::{ensure_parent, DaemonPaths};

use super::claim::{Claim, Healed, HEAL_INTERVAL};
use super::control::{self, ControlState, DaemonInfo};
use super::launch::Launch;
use super::sdnotify;
use super::workload::{Workload, WorkloadFactory};

/// Drain budget when the daemon is stopped by SIGTERM or SIGINT.
pub(crate) const SIGNAL_DRAIN: Duration = Duration::from_secs(10);

/// Where the daemon reports "ready" or its startup error.
pub(crate) struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// No pipe: a foreground run (`daemon run`) reports to nobody.
    pub(crate) fn none() -> ReadyPipe {
        ReadyPipe(None)
    }

    /// The write end of the pipe `daemon start` reads, handed over across the fork
    /// ([`super::detach::spawn_detached`]).
    pub(crate) fn to_start(pipe: File) -> ReadyPipe {
        ReadyPipe(Some(pipe))
    }

    fn send(&mut self, line: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
    }

    pub(crate) fn ready(&mut self) {
        self.send(&format!("READY {}", std::process::id()));
    }

    pub(crate) fn failed(&mut self, message: &str) {
        self.send(&format!("ERROR {message}"));
    }
}

/// Runs the daemon, with the workload `workloads` starts for `launch`, until it is asked
/// to stop. Startup errors go to the ready pipe (and stderr) and decide the exit code.
pub(crate) fn run(
    paths: &DaemonPaths,
    launch: &Launch,
    workloads: &dyn WorkloadFactory,
    mut ready: ReadyPipe,
) -> Result<Code, CliError> {
    let result = start_and_serve(paths, launch, workloads, &mut ready);
    if let Err(e) = &result {
        ready.failed(&e.message);
    }
    result
}

fn start_and_serve(
    paths: &DaemonPaths,
    launch: &Launch,
    workloads: &dyn WorkloadFactory,
    ready: &mut ReadyPipe,
) -> Result<Code, CliError> {
    // Before any thread starts (the log worker, the async runtime): see `heap`.
    super::heap::use_one_malloc_arena();
    // Dropped last on every path out of here: removes the pid file and socket it made.
    let mut claim = Claim::acquire(paths)?;

    let config = match (&launch.config, &launch.exec) {
        (Some(path), None) => Some(config::load(path)?),
        (Some(path), Some(_)) if path.exists() => Some(config::load(path)?),
        _ => None,
    };
    let log_cfg = config
        .as_ref()
        .map(|c| c.logging.clone())
        .unwrap_or_else(LoggingConfig::default);
    if let Some(file) = launch.log.file() {
        ensure_parent(file)?;
    }
    let (guard, last_error) = logging::init(&launch.log, &log_cfg).map_err(|e| {
        let file = launch.log.file().unwrap_or(std::path::Path::new("stderr"));
        crate::paths::io_error("open log file", file, e)
    })?;
    if let Err(e) = super::argv_mask::hide_secrets() {
        tracing::warn!("the command line may show secrets to `ps`: {e}");
    }
    match logging::HashKey::load_or_create(&paths.log_hash_key()) {
        Ok(key) => logging::install_hash_key(key),
        Err(e) => tracing::warn!("{e}"),
    }
    tracing::info!(
        log = %logging::describe_running(&launch.log),
        "logging"
    );
    let nofile = crate::listen::nofile::raise_soft_limit();
    tracing::info!(
        nofile,
        http_max_connections = crate::listen::nofile::http_connection_cap(nofile),
        "open-file limit (soft RLIMIT_NOFILE, raised to the hard limit where allowed)"
    );
    if let Some(path) = &launch.config {
        for w in config::permission_warnings(path) {
            tracing::warn!("{w}");
        }
    }
    for w in config.iter().flat_map(config::deprecation_warnings) {
        tracing::warn!("{w}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ASYNC_WORKERS)
        .enable_all()
        .thread_name("clawdbot-daemon")
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let daemon = Daemon {
        paths,
        launch,
        workloads,
        last_error,
    };
    let result = runtime.block_on(daemon.serve(config, ready, &mut claim));
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(guard);
    drop(claim);
    result
}

/// Async worker threads. One: the daemon's async work is I/O (sockets, timers), and the
/// blocking work has threads of its own (the journal's group commit, the log writer,
/// `spawn_blocking`). Measured at 1 000 msg/s on 2 cores (issue 12; `cargo bench --bench
/// pipeline -- --only ramp,saturation --rates 1000 --reps 3`, quiet machine), a second
/// worker cost 0.395 s CPU per 1 000 turns against 0.305 (the idle worker is woken to
/// steal nearly every newly woken task: ~5 context switches per turn instead of ~2), with
/// ACK p99 3.56 ms against 1.89, and gave no throughput this daemon needs:
/// one worker answers thousands of turns a second, far beyond what a self-hosted model
/// serves. The runtime stays multi-threaded so `spawn_blocking` and `Send` tasks work
/// as before.
const ASYNC_WORKERS: usize = 1;

/// What `serve` needs besides the claim and the config.
struct Daemon<'a> {
    paths: &'a DaemonPaths,
    launch: &'a Launch,
    workloads: &'a dyn WorkloadFactory,
    last_error: logging::LastError,
}

/// The signals the daemon handles.
struct Signals {
    stop: StopSignals,
    usr1: Signal,
    hup: Signal,
}

/// SIGTERM and SIGINT: both stop the daemon.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        let on = |kind| signal(kind).map_err(signal_err);
        Ok(Signals {
            stop: StopSignals {
                term: on(SignalKind::terminate())?,
                int: on(SignalKind::interrupt())?,
            },
            usr1: on(SignalKind::user_defined1())?,
            hup: on(SignalKind::hangup())?,
        })
    }
}

impl StopSignals {
    /// The next SIGTERM or SIGINT, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// A task aborted when this value is dropped (or replaced).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Daemon<'_> {
    async fn serve(
        &self,
        config: Option<Config>,
        ready: &mut ReadyPipe,
        claim: &mut Claim,
    ) -> Result<Code, CliError> {
        let ops_listener = bind_ops(config.as_ref()).await?;
        let listener = claim.bind()?;
        let listener = tokio_listener(listener, claim.socket_path())?;
        let mut signals = Signals::install()?;
        let workload = self.start_workload(config, &mut signals.stop).await?;
        let (shutdown_tx, mut shutdown_rx) = watch::channel(None::<Duration>);
        let state = Arc::new(ControlState {
            info: self.info(claim.socket_path()),
            workload: workload.clone(),
            shutdown: shutdown_tx.clone(),
        });
        let mut server = AbortOnDrop(tokio::spawn(control::serve(listener, state.clone())));
        let ops = ops_listener
            .map(|(bound, hosts)| crate::ops::OpsServer::start(bound, state.clone(), &hosts));

        tracing::info!(name = %self.paths.name, pid = std::process::id(), workload = workload.kind(), "daemon ready");
        ready.ready();
        sdnotify::notify("READY=1");
        let _notifier = AbortOnDrop(tokio::spawn(sdnotify::report_loop(state.clone())));

        let drain =
            run_until_stopped(claim, &state, &mut server, &mut signals, &mut shutdown_rx).await;
        let _ = shutdown_tx.send(Some(drain));
        sdnotify::notify("STOPPING=1");
        tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down");
        tokio::select! {
            _ = workload.shutdown(drain) => {}
            sig = signals.stop.next() => tracing::warn!("second {sig}: exiting without draining"),
        }
        if let Some(ops) = ops {
            ops.stop().await;
        }
        drop(server);
        tracing::info!("daemon stopped");
        Ok(Code::Ok)
    }

    /// Starts the workload; a SIGTERM meanwhile (a start that timed out) gives up cleanly
    /// rather than leaving a half-started daemon.
    async fn start_workload(
        &self,
        config: Option<Config>,
        stop: &mut StopSignals,
    ) -> Result<Arc<dyn Workload>, CliError> {
        tokio::select! {
            w = self.workloads.start(self.paths, self.launch, config) => w.inspect_err(|e| {
                tracing::error!("startup failed: {e}");
            }),
            sig = stop.next() => {
                tracing::warn!("{sig} before the daemon was ready: not starting");
                Err(CliError::failure(format!("stopped by {sig} during startup")))
            }
        }
    }

    fn info(&self, socket: &std::path::Path) -> DaemonInfo {
        DaemonInfo {
            name: self.paths.name.clone(),
            config_path: self.launch.config.as_ref().map(|p| p.display().to_string()),
            log_path: logging::describe_running(&self.launch.log),
            socket: std::sync::RwLock::new(socket.display().to_string()),
            started_at_ms: crate::clock::now_ms(),
            started: Instant::now(),
            last_error: self.last_error.clone(),
        }
    }
}

/// Binds the ops endpoint when the config asks for one (before the workload starts, so a
/// taken port fails the start); with the `Host` values it also answers to.
async fn bind_ops(
    config: Option<&Config>,
) -> Result<Option<((TcpListener, std::net::SocketAddr), Vec<String>)>, CliError> {
    let Some(cfg) = config.and_then(|c| c.ops.as_ref()) else {
        return Ok(None);
    };
    let listener = crate::ops::OpsServer::bind(cfg).await.map_err(|e| {
        tracing::error!("startup failed: {e}");
        CliError::from(e)
    })?;
    Ok(Some((listener, cfg.allowed_hosts.clone())))
}

/// Serves signals until the daemon is asked to stop (SIGTERM/SIGINT, the control
/// socket's `stop`, or another daemon taking the name); returns the drain budget.
/// SIGUSR1 reopens the log, SIGHUP reloads the workload's config, and the claim is
/// healed (and free heap pages given back, see `heap`) every [`HEAL_INTERVAL`].
async fn run_until_stopped(
    claim: &mut Claim,
    state: &Arc<ControlState>,
    server: &mut AbortOnDrop,
    signals: &mut Signals,
    shutdown_rx: &mut watch::Receiver<Option<Duration>>,
) -> Duration {
    let mut heal = tokio::time::interval(HEAL_INTERVAL);
    heal.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = signals.stop.next() => return SIGNAL_DRAIN,
            _ = signals.usr1.recv() => {
                logging::request_reopen();
                tracing::info!("log file reopened (SIGUSR1)");
            }
            _ = signals.hup.recv() => match state.workload.reload().await {
                Ok(()) => tracing::info!(resolved = "config_reload", "config reloaded (SIGHUP)"),
                Err(e) => tracing::error!(topic = "config_reload", "config reload failed, keeping the old config: {e}"),
            },
            changed = shutdown_rx.changed() => {
                if changed.is_err() { return SIGNAL_DRAIN; }
                if let Some(d) = *shutdown_rx.borrow() { return d; }
            }
            _ = heal.tick() => {
                super::heap::give_back_free_pages();
                if keep_claim(claim, state, server).is_break() { return SIGNAL_DRAIN; }
            }
        }
    }
}

/// One self-heal round (see [`Claim::heal`]): a restored socket gets a new control
/// server. `Break` when another daemon took the name and this one must stop.
fn keep_claim(
    claim: &mut Claim,
    state: &Arc<ControlState>,
    server: &mut AbortOnDrop,
) -> ControlFlow<()> {
    match claim.heal() {
        Healed::Intact | Healed::Busy => {}
        Healed::Restored { what, listener } => {
            tracing::warn!("restored {what} (deleted or replaced while the daemon ran)");
            if let Some(l) = listener {
                match tokio_listener(l, claim.socket_path()) {
                    Ok(l) => {
                        state.set_socket(claim.socket_path());
                        *server = AbortOnDrop(tokio::spawn(control::serve(l, state.clone())));
                    }
                    Err(e) => tracing::warn!("{}", e.message),
                }
            }
        }
        Healed::Lost(why) => {
            tracing::error!("{why}: another daemon of this name runs; stopping this one");
            return ControlFlow::Break(());
        }
        Healed::Failed(why) => tracing::warn!("cannot check the pid file and socket: {why}"),
    }
    ControlFlow::Continue(())
}

/// A bound std listener, handed to tokio.
fn tokio_listener(
    listener: std::os::unix::net::UnixListener,
    path: &std::path::Path,
) -> Result<UnixListener, CliError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map_err(|e| crate::paths::io_error("listen on", path, e).into())
}

fn signal_err(e: std::io::Error) -> CliError {
    CliError::failure(format!("cannot install signal handlers: {e}"))
}
