//! One module per CLI command. Each returns the exit code (or a [`CliError`] carrying it).

mod completions;
mod config_check;
mod daemon_logs;
mod daemon_start;
mod daemon_status;
mod daemon_stop;
mod healthcheck;
mod onboard;
pub mod output;
mod quickstart;
mod send;

use crate::cli::{Cli, Command, ConfigCommand, DaemonCommand};
use crate::exit::{CliError, Code};
use crate::paths::Layout;

pub use daemon_start::start_daemon;
pub use daemon_stop::stop_daemon;

/// Runs the parsed command line; prints errors; returns the process exit code.
pub fn run(cli: Cli) -> Code {
    let layout = Layout::resolve(cli.home.as_deref());
    let out = output::Output::new(cli.json);
    let result = match &cli.command {
        Command::Daemon(DaemonCommand::Start(a)) => daemon_start::start(&layout, a, &out),
        Command::Daemon(DaemonCommand::Run(a)) => daemon_start::run_foreground(&layout, a),
        Command::Daemon(DaemonCommand::Stop(a)) => daemon_stop::stop(&layout, a, &out),
        Command::Daemon(DaemonCommand::Restart(a)) => daemon_start::restart(&layout, a, &out),
        Command::Daemon(DaemonCommand::Status(a)) => daemon_status::status(&layout, a, &out),
        Command::Daemon(DaemonCommand::Logs(a)) => daemon_logs::logs(&layout, a),
        Command::Config(ConfigCommand::Check { config }) => config_check::check(config, &out),
        Command::Completions(a) => completions::print(a),
        Command::Send(a) => send::send(&layout, a, &out),
        Command::Healthcheck(a) => healthcheck::healthcheck(&layout, a, &out),
        Command::Onboard(a) => onboard::onboard(&layout, a, &out),
        Command::Sim(a) => crate::sim::command(a, &layout, &out),
        Command::Quickstart(a) => quickstart::quickstart(&layout, a, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.code
        }
    }
}

/// Shorthand used by commands that are not built yet.
#[allow(dead_code)]
pub(crate) fn not_yet(what: &str) -> Result<Code, CliError> {
    Err(CliError::failure(format!("{what}: not yet implemented")))
}
