//! The command-line interface, defined once with clap. Completions and man pages are
//! generated from this definition (see [`crate::docs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCandidates;

pub(crate) mod complete;
pub(crate) mod sim;
mod since;

/// Operator CLI and managed daemon for a DingTalk bot answered by a local model.
#[derive(Debug, Parser)]
#[command(name = "clawdbot", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage or config error, 3 daemon not running, 4 cannot tell."
)]
pub(crate) struct Cli {
    /// Keep every file (config, state, logs, sockets) under this folder.
    #[arg(long, global = true, env = "CLAWDBOT_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    /// Print one JSON document on stdout (human text goes to stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a config for a channel and check the credentials and the model endpoint.
    Onboard(OnboardArgs),
    /// Manage background daemons (the bot, or a supervised model service).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Send a message through a running bot daemon.
    Send(SendArgs),
    /// List the conversations a running bot has seen recently (ids for targets and allowlists).
    Conversations(ConversationsArgs),
    /// Check the daemon, the channel and the model, in troubleshooting order.
    Healthcheck(HealthcheckArgs),
    /// Config file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Run the local DingTalk simulator (Stream gateway, OpenAPI, session webhooks).
    Sim(sim::SimArgs),
    /// Show the whole path working: simulator, bot daemon, a message and its reply.
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Start a daemon in the background; returns once it answers on its socket.
    Start(StartArgs),
    /// Run a daemon in the foreground (systemd Type=notify, containers).
    Run(RunArgs),
    /// Stop a daemon: drain in-flight work, then SIGTERM, then SIGKILL.
    Stop(StopArgs),
    /// Stop, then start again with the same settings.
    Restart(RestartArgs),
    /// Show whether daemons are running, with their figures.
    Status(StatusArgs),
    /// Forget a stopped daemon: `daemon status` no longer lists it (its journal is kept).
    Rm(RmArgs),
    /// Print a daemon's log; for a daemon logging to stderr, say where its log is (exit 1).
    Logs(LogsArgs),
    /// Write a systemd unit that runs a daemon (and with --now enable and start it).
    Install(InstallArgs),
    /// Remove a unit written by `daemon install` (with --now, stop and disable it first).
    Uninstall(UninstallArgs),
}

/// Where units go and whether systemd is asked to act.
#[derive(Debug, Args, Clone)]
pub(crate) struct UnitPlaceArgs {
    /// Daemon name (the unit's instance name, %i).
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::startable_names))]
    pub(crate) name: String,
    /// A user unit (`systemctl --user`, ~/.config/systemd/user) instead of a system one
    /// (/etc/systemd/system, needs root).
    #[arg(long)]
    pub(crate) user: bool,
    /// Also run systemctl: daemon-reload and enable --now (install) or disable --now (uninstall).
    #[arg(long)]
    pub(crate) now: bool,
    /// Write the unit in this folder instead of systemd's (for packaging and tests).
    #[arg(long, value_name = "DIR")]
    pub(crate) unit_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    pub(crate) place: UnitPlaceArgs,
    /// Config file for the bot (default: the unit's configuration folder, /etc/clawdbot/NAME.yaml).
    #[arg(long, value_name = "FILE", conflicts_with = "exec")]
    pub(crate) config: Option<PathBuf>,
    /// Supervise this command instead of running the bot (a model service unit).
    #[arg(long, value_name = "CMD ARGS")]
    pub(crate) exec: Option<String>,
    /// With --exec: URL polled for the model service's health.
    #[arg(long, value_name = "URL", requires = "exec")]
    pub(crate) health_url: Option<String>,
    /// Replace a unit file that exists already.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    #[command(flatten)]
    pub(crate) place: UnitPlaceArgs,
}

/// What a daemon runs and where it logs.
#[derive(Debug, Args, Clone, Default)]
#[command(group = clap::ArgGroup::new("model_service").args(["exec", "exec_file"]).multiple(false))]
pub(crate) struct LaunchArgs {
    /// Daemon name (folder and socket name).
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::startable_names))]
    pub(crate) name: String,
    /// Config file (default: the last one used for this name, else CONFIG_DIR/NAME.yaml).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log file, rotated by size, or `-` for stderr (`daemon run` only). Default: stderr
    /// for `daemon run` under systemd or in a container, else LOG_DIR/NAME.log
    /// (`logging.target` in the config can fix either).
    #[arg(long, value_name = "PATH|-")]
    pub(crate) log: Option<PathBuf>,
    /// Supervise this command instead of running the bot (a model service such as llama-server).
    #[arg(long, value_name = "CMD ARGS")]
    pub(crate) exec: Option<String>,
    /// Like --exec, with the command line read from FILE (one line; owner-only permissions),
    /// so secrets in it stay out of argv and unit files.
    #[arg(long, value_name = "FILE", conflicts_with = "exec")]
    pub(crate) exec_file: Option<PathBuf>,
    /// With --exec or --exec-file: URL polled for the model service's health.
    #[arg(long, value_name = "URL", requires = "model_service")]
    pub(crate) health_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
    /// Seconds to wait for the daemon to answer ready and, for a bot with a channel, for
    /// DingTalk to accept its credentials (1 to 86400); a daemon not ready by then, or
    /// whose credentials DingTalk refused, is stopped (exit 1).
    #[arg(long, default_value_t = 20, value_name = "SECONDS", value_parser = timeout_secs())]
    pub(crate) timeout: u64,
    /// Do not wait for DingTalk to accept the channel's credentials (the daemon is
    /// reported started once it answers on its control socket).
    #[arg(long)]
    pub(crate) no_wait_channel: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: String,
    /// Seconds for draining before SIGTERM, and again before SIGKILL (0 to 86400).
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = drain_secs())]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
    /// Seconds allowed for the stop and for the start (1 to 86400).
    #[arg(long, default_value_t = 20, value_name = "SECONDS", value_parser = timeout_secs())]
    pub(crate) timeout: u64,
    /// Do not wait for DingTalk to accept the channel's credentials (the daemon is
    /// reported started once it answers on its control socket).
    #[arg(long)]
    pub(crate) no_wait_channel: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// One daemon; without it, every daemon under this home.
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// One daemon; without it, every daemon's log, merged by time, each line prefixed
    /// with its daemon's name.
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: Option<String>,
    /// Only lines logged since then: a duration back from now (`90s`, `10m`, `2h`, `1d`)
    /// or an RFC 3339 time (`2026-11-30T22:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = since::parse_since)]
    pub(crate) since: Option<std::time::SystemTime>,
    /// Keep printing new lines (follows rotation).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// How many lines from the end to print first.
    #[arg(long, short = 'n', default_value_t = 50, value_name = "N")]
    pub(crate) lines: usize,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: String,
    /// A target alias from the config, a conversation id, or user:STAFFID.
    #[arg(long, value_name = "TARGET", add = ArgValueCandidates::new(complete::target_aliases))]
    pub(crate) to: String,
    /// The message.
    #[arg(long, value_name = "TEXT")]
    pub(crate) text: String,
    /// Send as markdown instead of plain text.
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Seconds to wait for DingTalk's answer (1 to 86400).
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = timeout_secs())]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ConversationsArgs {
    /// The bot daemon to ask.
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: String,
    /// Show at most this many, the most recently active first (1 to 200; the daemon
    /// remembers 200).
    #[arg(long, default_value_t = 200, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=200))]
    pub(crate) limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The daemon to check.
    #[arg(long, value_name = "NAME", conflicts_with = "config",
          add = ArgValueCandidates::new(complete::daemon_names))]
    pub(crate) name: Option<String>,
    /// Pre-flight: check a config's model endpoints and credentials without a daemon.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Seconds for all checks together (1 to 86400).
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = timeout_secs())]
    pub(crate) timeout: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Load a config and report the first problem (exit 0 good, 2 bad).
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    pub(crate) shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Dingtalk,
}

#[derive(Debug, Args)]
pub(crate) struct OnboardArgs {
    #[arg(long, value_enum, default_value = "dingtalk")]
    pub(crate) channel: ChannelKind,
    /// Where to write the config (default: CONFIG_DIR/NAME.yaml, the file `daemon start
    /// --name NAME` reads without --config).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The bot daemon that will use this config: `daemon start --name NAME` then needs no
    /// --config.
    #[arg(long, value_name = "NAME", default_value = "dingtalk-bot")]
    pub(crate) name: String,
    /// Never prompt; take every value from flags or environment variables.
    #[arg(long)]
    pub(crate) non_interactive: bool,
    #[arg(long, env = "DINGTALK_CLIENT_ID", value_name = "ID")]
    pub(crate) client_id: Option<String>,
    #[arg(
        long,
        env = "DINGTALK_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub(crate) client_secret: Option<String>,
    #[arg(long, value_name = "CODE")]
    pub(crate) robot_code: Option<String>,
    /// Base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    pub(crate) model_base_url: Option<String>,
    /// Model name sent in each request.
    #[arg(long, value_name = "MODEL")]
    pub(crate) model: Option<String>,
    /// Write the model API key as ${VAR} with this variable name.
    #[arg(long, value_name = "VAR")]
    pub(crate) model_api_key_env: Option<String>,
    /// Write the client secret as ${VAR} with this variable name instead of inline.
    #[arg(long, value_name = "VAR")]
    pub(crate) client_secret_env: Option<String>,
    /// DingTalk OpenAPI base URL (the simulator's, for local tests).
    #[arg(long, value_name = "URL")]
    pub(crate) api_base: Option<String>,
    /// Deprecated and ignored (the bot makes no call on DingTalk's old API host); still
    /// accepted and checked so that existing scripts run, with a warning.
    #[arg(long, value_name = "URL", hide = true)]
    pub(crate) oapi_base: Option<String>,
    /// A send target alias (repeatable): NAME=cidXXX (a group) or NAME=user:STAFFID.
    #[arg(long = "target", value_name = "NAME=ID")]
    pub(crate) targets: Vec<String>,
    /// Overwrite an existing config file.
    #[arg(long)]
    pub(crate) force: bool,
    /// Write the config without checking credentials or the model endpoint.
    #[arg(long)]
    pub(crate) skip_checks: bool,
}

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Use this OpenAI-compatible endpoint instead of the built-in demo model.
    #[arg(long, value_name = "URL")]
    pub(crate) model_base_url: Option<String>,
    /// Model name for --model-base-url.
    #[arg(long, value_name = "MODEL", default_value = "local-chat")]
    pub(crate) model: String,
    /// The message the simulated user sends.
    #[arg(long, default_value = "Hello bot, are you there?", value_name = "TEXT")]
    pub(crate) text: String,
    /// Stop the simulator and the daemon when done instead of leaving them running.
    #[arg(long)]
    pub(crate) stop: bool,
    /// With --stop: run no demo; only stop the demo's bot and simulator and remove the
    /// demo folder (its config, state, logs and sockets).
    #[arg(long, requires = "stop")]
    pub(crate) clean: bool,
}

/// The longest wait any `--timeout` accepts: one day. Bounding it here, before anything
/// runs, keeps deadline arithmetic (`Instant + Duration`) from overflowing and a restart
/// from stopping a daemon it then cannot start.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 86_400;

/// A whole number of seconds from 1 (a zero deadline can only fail) to a day.
fn timeout_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS)
}

/// A whole number of seconds from 0 (no grace) to a day.
fn drain_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_TIMEOUT_SECS)
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
