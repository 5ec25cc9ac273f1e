//! The resolved settings of one daemon launch, remembered in the state folder so that
//! `restart` and `logs` know the config and log paths of the last start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::LaunchArgs;
use crate::exit::CliError;
use crate::gateway::cmdline::CommandLine;
use crate::gateway::health::HealthProbe;
use crate::logging::{LogTarget, RunMode};
use crate::paths::{absolute, write_private, DaemonPaths};

/// Everything needed to run a daemon, with absolute paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Launch {
    pub name: String,
    /// The bot's config (for `--exec` gateways: optional).
    pub config: Option<PathBuf>,
    /// Where the log goes (saved as the path, or `-` for stderr).
    pub log: LogTarget,
    /// A supervised command line instead of the bot.
    pub exec: Option<String>,
    pub health_url: Option<String>,
}

impl Launch {
    /// Fills in what the flags leave out: the last launch's values, then the defaults.
    /// A bot needs a config file that exists. Everything that can be checked without
    /// running is checked here, before any fork: a bad `--exec` command line or
    /// `--health-url` is a usage error naming the flag, and so is a stderr log for a
    /// detached daemon (see [`crate::logging::choose_target`]). `me` is how to run this
    /// binary (for the hint in the error).
    pub fn resolve(
        paths: &DaemonPaths,
        args: &LaunchArgs,
        me: &str,
        mode: RunMode,
    ) -> Result<Launch, CliError> {
        let previous = Launch::load(paths);
        let from_file = match &args.exec_file {
            Some(file) => Some(
                super::exec_file::read_exec_file(&absolute(file))
                    .map_err(|e| CliError::usage(e.to_string()))?,
            ),
            None => None,
        };
        let (from_file, health_url_from_file) = match from_file {
            Some(contents) => (Some(contents.command), contents.health_url),
            None => (None, None),
        };
        let exec = from_file
            .or_else(|| args.exec.clone())
            .or_else(|| previous.as_ref().and_then(|p| p.exec.clone()));
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
        let flag = args.log.as_deref().map(|a| match LogTarget::from_arg(a) {
            LogTarget::File(path) => LogTarget::File(absolute(&path)),
            stderr => stderr,
        });
        // The flag wins over the command file's `health-url` line.
        let health_url = args
            .health_url
            .clone()
            .or(health_url_from_file)
            .or_else(|| previous.as_ref().and_then(|p| p.health_url.clone()));
        if exec.is_none() && config.is_none() {
            return Err(CliError::usage(format!(
                "no config for daemon {name:?}: pass --config FILE (or create {default}; \
                 `{me} onboard --config {default}` writes one)",
                name = paths.name,
                default = paths.default_config.display()
            )));
        }
        let setting = match (&config, &exec) {
            (Some(path), None) => crate::config::load(path)?.logging.target,
            (Some(path), Some(_)) if path.exists() => crate::config::load(path)?.logging.target,
            _ => Default::default(),
        };
        let collector = match mode {
            RunMode::Foreground => crate::logging::detect_collector(),
            RunMode::Detached => None,
        };
        let log = crate::logging::choose_target(
            flag,
            setting,
            mode,
            collector,
            previous.map(|p| p.log),
            &paths.default_log,
        )
        .map_err(|e| CliError::usage(e.to_string()))?;
        let launch = Launch {
            name: paths.name.clone(),
            config,
            log,
            exec,
            health_url,
        };
        launch.check_gateway()?;
        Ok(launch)
    }

    /// A gateway's command line splits and its program exists; its health URL is an
    /// http(s) URL. Parsed exactly as the daemon will parse them (the errors name the flag).
    fn check_gateway(&self) -> Result<(), CliError> {
        if let Some(cmd) = &self.exec {
            CommandLine::parse(cmd).map_err(|e| CliError::usage(e.to_string()))?;
        }
        if let Some(url) = &self.health_url {
            HealthProbe::new(url)?;
        }
        Ok(())
    }

    /// The last saved launch, if any and readable. Read only from a state folder that
    /// passes [`DaemonPaths::check_state_dir`]: a launch file another user could have
    /// written (it names a command to run) is never believed.
    pub fn load(paths: &DaemonPaths) -> Option<Launch> {
        if !matches!(paths.check_state_dir(), Ok(true)) {
            return None;
        }
        let bytes = crate::fsutil::read_nofollow(&paths.launch_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Saves this launch for later `restart` and `logs`.
    pub fn save(&self, paths: &DaemonPaths) -> Result<(), CliError> {
        paths.ensure_state_dir()?;
        let body = serde_json::to_vec_pretty(self).expect("launch settings serialize");
        Ok(write_private(&paths.launch_file(), &body)?)
    }

    /// The log to read for `logs`, even when the daemon never started.
    pub fn log_target(paths: &DaemonPaths) -> LogTarget {
        Launch::load(paths)
            .map(|l| l.log)
            .unwrap_or_else(|| LogTarget::File(paths.default_log.clone()))
    }
}
