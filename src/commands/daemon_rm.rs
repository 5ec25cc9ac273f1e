//! `daemon rm`: forget a stopped daemon, so `daemon status` no longer lists it.
//!
//! Only the saved launch (what lists the name) goes; the state folder's journal stays, since
//! it may hold replies still owed: starting the name again picks them up.
//! A running daemon, or one being started, is refused.

use serde_json::json;

use super::output::Output;
use crate::cli::RmArgs;
use crate::daemon::pidfile::{open_lock_file, try_lock_exclusive, TryLock};
use crate::daemon::probe::remove_leftovers;
use crate::daemon::{probe, Down, Probe};
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::paths::{io_error, DaemonPaths, Layout};

pub(super) fn rm(layout: &Layout, args: &RmArgs, out: &Output) -> CmdResult {
    let paths = layout.daemon(&args.name)?;
    paths.check_state_dir()?;
    let name = &paths.name;
    if !paths.is_listed() {
        return Err(CliError::usage(format!(
            "no daemon named {name:?} is known here{}",
            super::daemon_status::other_daemons(layout, name)
        )));
    }
    let lock = open_lock_file(&paths.start_lock)
        .and_then(try_lock_exclusive)
        .map_err(|e| io_error("lock", &paths.start_lock, e))?;
    if let TryLock::HeldByOther = lock {
        return Err(CliError::failure(format!(
            "{name} is being started or stopped; try again when that is done"
        )));
    }
    match probe(&paths) {
        Probe::Down(Down::NotRunning | Down::Stale { .. }) => {}
        Probe::Down(Down::Denied { reason }) => {
            return Err(CliError::new(Code::Unknown, reason).kind(ErrorKind::Permission))
        }
        Probe::Down(Down::UnsafeFolder { reason }) => {
            return Err(CliError::usage(reason).kind(ErrorKind::Permission))
        }
        Probe::Running { .. } | Probe::Down(Down::Unresponsive { .. }) => {
            let stop = format!("{} daemon stop --name {name}", super::invocation(layout));
            return Err(
                CliError::failure(format!("{name} is running; stop it first: {stop}")).fix(stop),
            );
        }
    }
    forget(&paths);
    out.result(
        json!({"name": name, "state": "forgotten",
               "state_dir": paths.state.display().to_string()}),
        &format!(
            "forgot {name}; its state folder {} is kept (it may hold replies still owed)",
            paths.state.display()
        ),
    );
    Ok(Code::Ok)
}

/// Unlists a daemon that is not running: its leftovers and its saved launch go.
pub(super) fn forget(paths: &DaemonPaths) {
    remove_leftovers(paths);
    let _ = std::fs::remove_file(paths.launch_file());
}
