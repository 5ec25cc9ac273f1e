//! One module per CLI command. Each returns the exit code (or a [`CliError`] carrying it).

mod completions;
mod config_check;
mod conversations;
mod daemon_install;
mod daemon_logs;
mod daemon_rm;
mod daemon_start;
mod daemon_status;
mod daemon_stop;
mod healthcheck;
mod launch;
mod log_tail;
mod onboard;
pub(crate) mod output;
mod quickstart;
mod send;
mod sim;
mod workloads;

use std::ffi::OsString;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand, DaemonCommand};
use crate::cmdline::shell_quote;
use crate::exit::{CliError, CmdResult, Code};
use crate::paths::Layout;

pub(crate) use daemon_start::start_daemon;
pub(crate) use daemon_stop::stop_daemon;

/// The whole program: parses `args` (the first one is the program name), runs the
/// command, and returns the exit code. Never panics on any input or output failure.
pub fn main(args: Vec<OsString>) -> std::process::ExitCode {
    if crate::cli::complete::answer_if_asked(&args) {
        return std::process::ExitCode::SUCCESS;
    }
    let code = match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(e) => output::clap_outcome(&e, wants_json(&args)),
    };
    std::process::ExitCode::from(output::settle(code) as u8)
}

/// Whether `--json` appears before any `--` (for clap errors, found before parsing).
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Runs the parsed command line; prints errors; returns the process exit code.
pub(crate) fn run(cli: Cli) -> Code {
    let out = output::Output::new(cli.json);
    let result = Layout::resolve(cli.home.as_deref())
        .map_err(CliError::from)
        .and_then(|layout| dispatch(&cli, &layout, &out));
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.code
        }
    }
}

fn dispatch(cli: &Cli, layout: &Layout, out: &output::Output) -> CmdResult {
    match &cli.command {
        Command::Daemon(DaemonCommand::Start(a)) => daemon_start::start(layout, a, out),
        Command::Daemon(DaemonCommand::Run(a)) => daemon_start::run_foreground(layout, a),
        Command::Daemon(DaemonCommand::Stop(a)) => daemon_stop::stop(layout, a, out),
        Command::Daemon(DaemonCommand::Restart(a)) => daemon_start::restart(layout, a, out),
        Command::Daemon(DaemonCommand::Status(a)) => daemon_status::status(layout, a, out),
        Command::Daemon(DaemonCommand::Rm(a)) => daemon_rm::rm(layout, a, out),
        Command::Daemon(DaemonCommand::Logs(a)) => daemon_logs::logs(layout, a),
        Command::Daemon(DaemonCommand::Install(a)) => daemon_install::install(a, out),
        Command::Daemon(DaemonCommand::Uninstall(a)) => daemon_install::uninstall(a, out),
        Command::Config(ConfigCommand::Check { config }) => config_check::check(config, out),
        Command::Completions(a) => completions::print(a),
        Command::Send(a) => send::send(layout, a, out),
        Command::Conversations(a) => conversations::list(layout, a, out),
        Command::Healthcheck(a) => healthcheck::healthcheck(layout, a, out),
        Command::Onboard(a) => onboard::onboard(layout, a, out),
        Command::Sim(a) => sim::command(layout, a, out),
        Command::Quickstart(a) => quickstart::quickstart(layout, a, out),
    }
}

/// Shorthand used by commands that are not built yet.
#[allow(dead_code)]
pub(crate) fn not_yet(what: &str) -> Result<Code, CliError> {
    Err(CliError::failure(format!("{what}: not yet implemented")))
}

/// How to run this binary again against the same home, for every printed command hint:
/// `clawdbot` when that is what `PATH` finds, else this executable's path
/// (`./target/debug/clawdbot` after `cargo run`), plus `--home DIR` unless
/// `CLAWDBOT_HOME` already names that home.
pub(crate) fn invocation(layout: &Layout) -> String {
    let from_env =
        std::env::var_os("CLAWDBOT_HOME").map(|h| crate::paths::absolute(std::path::Path::new(&h)));
    let home_flag = match &layout.home {
        Some(home) if from_env.as_ref() != Some(home) => {
            format!(" --home {}", shell_quote(&home.display().to_string()))
        }
        _ => String::new(),
    };
    format!("{}{home_flag}", self_command())
}

/// This executable as the user would type it (see [`invocation`]).
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return "clawdbot".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("clawdbot"))
        .find(|candidate| candidate.is_file());
    if on_path.and_then(|p| p.canonicalize().ok()).as_ref() == Some(&exe) {
        return "clawdbot".into();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            exe.strip_prefix(cwd)
                .ok()
                .map(|rel| format!("./{}", rel.display()))
        })
        .unwrap_or_else(|| exe.display().to_string());
    shell_quote(&shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_seen_before_the_separator_only() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&args(&["clawdbot", "daemon", "--json"])));
        assert!(!wants_json(&args(&["clawdbot", "--", "--json"])));
        assert!(!wants_json(&args(&["--json"])), "argv[0] is the program");
    }
}
