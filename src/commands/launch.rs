//! From `daemon start|run|restart` flags to the [`Launch`] a daemon runs: the flags, then
//! the last launch's values, then the defaults; checked before any fork.

use crate::cli::LaunchArgs;
use crate::cmdline::CommandLine;
use crate::daemon::Launch;
use crate::exit::CliError;
use crate::logging::{LogTarget, RunMode};
use crate::model_service::exec_file::read_exec_file;
use crate::model_service::health::HealthProbe;
use crate::paths::{absolute, DaemonPaths};

/// Fills in what the flags leave out: the last launch's values, then the defaults.
/// A bot needs a config file that exists. Everything that can be checked without
/// running is checked here, before any fork: a bad `--exec` command line or
/// `--health-url` is a usage error naming the flag, and so is a stderr log for a
/// detached daemon (see [`crate::logging::choose_target`]). `me` is how to run this
/// binary (for the hint in the error).
pub(crate) fn resolve(
    paths: &DaemonPaths,
    args: &LaunchArgs,
    me: &str,
    mode: RunMode,
) -> Result<Launch, CliError> {
    let previous = Launch::load(paths);
    let (exec, health_url) = supervised_command(args, previous.as_ref())?;
    let config = args
        .config
        .as_deref()
        .map(absolute)
        .or_else(|| previous.as_ref().and_then(|p| p.config.clone()))
        .or_else(|| {
            paths
                .default_config
                .exists()
                .then(|| paths.default_config.clone())
        });
    if exec.is_none() && config.is_none() {
        return Err(CliError::usage(format!(
            "no config for daemon {name:?}: pass --config FILE (or create {default}; \
             `{me} onboard --config {default}` writes one)",
            name = paths.name,
            default = paths.default_config.display()
        )));
    }
    let log = log_target(paths, args, mode, &config, exec.is_some(), previous)?;
    let launch = Launch {
        name: paths.name.clone(),
        config,
        log,
        exec,
        health_url,
    };
    check_model_service(&launch)?;
    Ok(launch)
}

/// The supervised command and its health URL: `--exec-file`, else `--exec`, else the
/// last launch's. `--health-url` wins over the command file's `health-url` line.
fn supervised_command(
    args: &LaunchArgs,
    previous: Option<&Launch>,
) -> Result<(Option<String>, Option<String>), CliError> {
    let from_file = match &args.exec_file {
        Some(file) => {
            let contents =
                read_exec_file(&absolute(file)).map_err(|e| CliError::usage(e.to_string()))?;
            Some(contents)
        }
        None => None,
    };
    let (from_file, health_url_from_file) = match from_file {
        Some(contents) => (Some(contents.command), contents.health_url),
        None => (None, None),
    };
    let exec = from_file
        .or_else(|| args.exec.clone())
        .or_else(|| previous.and_then(|p| p.exec.clone()));
    let health_url = args
        .health_url
        .clone()
        .or(health_url_from_file)
        .or_else(|| previous.and_then(|p| p.health_url.clone()));
    Ok((exec, health_url))
}

/// Where the log goes: `--log`, the config's `logging.target`, the collector `daemon run`
/// runs under, the last launch's, the default file (see [`crate::logging::choose_target`]).
/// A model service's config is optional, so it is read only when it exists.
fn log_target(
    paths: &DaemonPaths,
    args: &LaunchArgs,
    mode: RunMode,
    config: &Option<std::path::PathBuf>,
    supervises: bool,
    previous: Option<Launch>,
) -> Result<LogTarget, CliError> {
    let flag = args.log.as_deref().map(|a| match LogTarget::from_arg(a) {
        LogTarget::File(path) => LogTarget::File(absolute(&path)),
        stderr => stderr,
    });
    let setting = match config {
        Some(path) if !supervises || path.exists() => crate::config::load(path)?.logging.target,
        _ => Default::default(),
    };
    let collector = match mode {
        RunMode::Foreground => crate::logging::detect_collector(),
        RunMode::Detached => None,
    };
    crate::logging::choose_target(
        flag,
        setting,
        mode,
        collector,
        previous.map(|p| p.log),
        &paths.default_log,
    )
    .map_err(|e| CliError::usage(e.to_string()))
}

/// A model service's command line splits and its program exists; its health URL is an
/// http(s) URL. Parsed exactly as the daemon will parse them (the errors name the flag).
fn check_model_service(launch: &Launch) -> Result<(), CliError> {
    if let Some(cmd) = &launch.exec {
        CommandLine::parse(cmd).map_err(|e| CliError::usage(e.to_string()))?;
    }
    if let Some(url) = &launch.health_url {
        HealthProbe::new(url)?;
    }
    Ok(())
}
