//! `daemon install` / `daemon uninstall`: write or remove the systemd unit of a daemon.
//!
//! The unit is an instance file of clawdbot's template (`clawdbot@NAME.service`, or
//! `clawdbot-gateway@NAME.service` with `--exec`), rendered by [`crate::daemon::unit`].
//! An existing file is replaced only with `--force`; uninstall removes only a file that
//! `daemon install` wrote (its first line is [`MARKER`]). systemctl is run only with
//! `--now`, and only when systemd is running here; otherwise the error names the missing
//! piece and the unit file is left as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use super::output::Output;
use crate::cli::{InstallArgs, UninstallArgs, UnitPlaceArgs};
use crate::cmdline::CommandLine;
use crate::daemon::unit::{
    unit_instance, ExecFilePlace, UnitSpec, UnitWorkload, MARKER, SERVICE_USER,
};
use crate::exit::{CliError, CmdResult, Code};
use crate::model_service::exec_file::render_exec_file;
use crate::model_service::health::HealthProbe;
use crate::paths::{absolute, io_error, validate_name, write_private};

pub(crate) fn install(args: &InstallArgs, out: &Output) -> CmdResult {
    let place = &args.place;
    validate_name(&place.name)?;
    let workload = unit_workload(args)?;
    let binary = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .map_err(|e| CliError::failure(format!("cannot find this clawdbot executable: {e}")))?;
    let spec = UnitSpec {
        workload,
        binary,
        user: place.user,
    };
    let text = spec.render().map_err(|e| CliError::usage(e.to_string()))?;
    let unit = spec.file_name(Some(&place.name));
    let dir = unit_dir(place)?;
    let file = dir.join(&unit);
    if place.now {
        systemd_running(place.user)?;
    }
    if !args.force && std::fs::symlink_metadata(&file).is_ok() {
        return Err(CliError::failure(format!(
            "{} exists already: give --force to replace it (or `daemon uninstall --name {}` first)",
            file.display(),
            place.name
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create folder", &dir, e))?;
    let exec_file = write_exec_file(args)?;
    write_private(&file, text.as_bytes())?;
    let ctl = systemctl_words(place.user);
    if place.now {
        systemctl(place.user, &["daemon-reload"])?;
        systemctl(place.user, &["enable", "--now", &unit])?;
    }
    let next = next_steps(&spec, place, &unit, &ctl);
    out.result(
        json!({"name": place.name, "unit": unit, "unit_path": file.display().to_string(),
               "exec_file": exec_file.as_ref().map(|p| p.display().to_string()),
               "enabled": place.now}),
        &match &exec_file {
            Some(exec) => format!(
                "wrote {} and its command (0600) in {}\n{next}",
                file.display(),
                exec.display()
            ),
            None => format!("wrote {}\n{next}", file.display()),
        },
    );
    Ok(Code::Ok)
}

/// What the unit runs: a model service for `--exec` (its command line and health URL
/// checked as the daemon will parse them, each on one line), else the bot.
fn unit_workload(args: &InstallArgs) -> Result<UnitWorkload, CliError> {
    let place = &args.place;
    let Some(exec) = &args.exec else {
        return Ok(UnitWorkload::Bot {
            config: args.config.as_deref().map(absolute),
        });
    };
    CommandLine::parse(exec).map_err(|e| CliError::usage(e.to_string()))?;
    if exec.contains(['\n', '\r']) {
        return Err(CliError::usage(
            "--exec contains a line break: give the command on one line",
        ));
    }
    if let Some(url) = &args.health_url {
        HealthProbe::new(url)?;
        if url.contains(['\n', '\r']) {
            return Err(CliError::usage("--health-url contains a line break"));
        }
    }
    Ok(UnitWorkload::ModelService {
        exec_file: match &place.unit_dir {
            Some(_) => ExecFilePlace::At(unit_dir(place)?.join(exec_file_name(place))),
            None => ExecFilePlace::ConfigDir,
        },
    })
}

/// A model service's command file (0600), where its unit loads it from; `None` for a bot.
fn write_exec_file(args: &InstallArgs) -> Result<Option<PathBuf>, CliError> {
    let (Some(exec), Some(path)) = (&args.exec, exec_file_path(&args.place)?) else {
        return Ok(None);
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create folder", parent, e))?;
    }
    let contents = render_exec_file(exec, args.health_url.as_deref());
    write_private(&path, contents.as_bytes())?;
    Ok(Some(path))
}

pub(crate) fn uninstall(args: &UninstallArgs, out: &Output) -> CmdResult {
    let place = &args.place;
    validate_name(&place.name)?;
    let dir = unit_dir(place)?;
    let found: Vec<(String, PathBuf)> = [false, true]
        .into_iter()
        .map(|model_service| format!("{}.service", unit_instance(model_service, &place.name)))
        .map(|unit| (unit.clone(), dir.join(unit)))
        .filter(|(_, file)| std::fs::symlink_metadata(file).is_ok())
        .collect();
    if found.is_empty() {
        out.result(
            json!({"name": place.name, "removed": []}),
            &format!("no unit for {} in {}", place.name, dir.display()),
        );
        return Ok(Code::Ok);
    }
    for (_, file) in &found {
        written_by_install(file)?;
    }
    if place.now {
        systemd_running(place.user)?;
        for (unit, _) in &found {
            systemctl(place.user, &["disable", "--now", unit])?;
        }
    }
    for (_, file) in &found {
        std::fs::remove_file(file).map_err(|e| io_error("remove", file, e))?;
    }
    // The model service's command file goes with its unit.
    let model_service_unit = format!("{}.service", unit_instance(true, &place.name));
    if found.iter().any(|(u, _)| *u == model_service_unit) {
        remove_exec_file(place)?;
    }
    if place.now {
        systemctl(place.user, &["daemon-reload"])?;
    }
    let removed: Vec<String> = found.iter().map(|(_, f)| f.display().to_string()).collect();
    let ctl = systemctl_words(place.user);
    let human = if place.now {
        format!("removed {}", removed.join(", "))
    } else {
        format!(
            "removed {}\nif it was running: {ctl} disable --now {} && {ctl} daemon-reload",
            removed.join(", "),
            found
                .iter()
                .map(|(u, _)| u.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    out.result(json!({"name": place.name, "removed": removed}), &human);
    Ok(Code::Ok)
}

/// A unit file is removed only when its first line is [`MARKER`]; otherwise exit 1 naming it.
fn written_by_install(file: &Path) -> Result<(), CliError> {
    let first = crate::fsutil::read_nofollow(file)
        .map_err(|e| io_error("read", file, e))?
        .split(|b| *b == b'\n')
        .next()
        .map(|l| l.to_vec())
        .unwrap_or_default();
    if first != MARKER.as_bytes() {
        return Err(CliError::failure(format!(
            "{} was not written by `clawdbot daemon install` (its first line is not {MARKER:?}): \
             not removing it; remove it yourself",
            file.display()
        )));
    }
    Ok(())
}

/// Removes a model service unit's command file (gone already is fine).
fn remove_exec_file(place: &UnitPlaceArgs) -> Result<(), CliError> {
    if let Some(exec) = exec_file_path(place)? {
        match std::fs::remove_file(&exec) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("remove", &exec, e).into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// `NAME.exec`, the file holding a model service unit's command line.
fn exec_file_name(place: &UnitPlaceArgs) -> String {
    format!("{}.exec", place.name)
}

/// Where the model service's command file goes, as the unit's `LoadCredential=` names it:
/// beside the unit with `--unit-dir`, else the unit's configuration folder (`%E/clawdbot`:
/// /etc/clawdbot, or ~/.config/clawdbot for `--user`). `None` when that folder is unknown.
fn exec_file_path(place: &UnitPlaceArgs) -> Result<Option<PathBuf>, CliError> {
    if place.unit_dir.is_some() {
        return Ok(Some(unit_dir(place)?.join(exec_file_name(place))));
    }
    let config = if place.user {
        directories::BaseDirs::new().map(|d| d.config_dir().to_path_buf())
    } else {
        Some(PathBuf::from("/etc"))
    };
    Ok(config.map(|c| c.join("clawdbot").join(exec_file_name(place))))
}

/// The folder the unit goes in: `--unit-dir`, else systemd's folder for admin units
/// (system: /etc/systemd/system, which needs root; user: $XDG_CONFIG_HOME/systemd/user).
fn unit_dir(place: &UnitPlaceArgs) -> Result<PathBuf, CliError> {
    if let Some(dir) = &place.unit_dir {
        return Ok(absolute(dir));
    }
    if place.user {
        let config = directories::BaseDirs::new()
            .map(|d| d.config_dir().to_path_buf())
            .ok_or_else(|| {
                CliError::failure("cannot find your config folder (HOME is not set?) for --user")
            })?;
        return Ok(config.join("systemd/user"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(CliError::usage(
            "a system unit (/etc/systemd/system) needs root: run with sudo, or give --user \
             for a unit of your own user manager",
        ));
    }
    Ok(PathBuf::from("/etc/systemd/system"))
}

/// `--now` needs systemctl and a running systemd (`/run/systemd/system` for the system
/// manager, `$XDG_RUNTIME_DIR/systemd` for the user's): an error naming what is missing.
fn systemd_running(user: bool) -> Result<(), CliError> {
    let missing = |what: String| {
        CliError::failure(format!(
            "--now needs a running systemd, but {what}: nothing was written; run again \
             without --now to only write the unit"
        ))
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("systemctl").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Err(missing("systemctl is not on PATH".into()));
    }
    let manager = if user {
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) => Path::new(&dir).join("systemd"),
            None => {
                return Err(missing(
                    "XDG_RUNTIME_DIR is not set (no login session)".into(),
                ))
            }
        }
    } else {
        PathBuf::from("/run/systemd/system")
    };
    if !manager.is_dir() {
        return Err(missing(format!(
            "{} does not exist (systemd is not the init system here, e.g. in a container)",
            manager.display()
        )));
    }
    Ok(())
}

fn systemctl_words(user: bool) -> String {
    if user {
        "systemctl --user"
    } else {
        "systemctl"
    }
    .to_string()
}

/// Runs systemctl; a failure names the command and its exit status.
fn systemctl(user: bool, args: &[&str]) -> Result<(), CliError> {
    let mut cmd = Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    cmd.args(args);
    let shown = format!("{} {}", systemctl_words(user), args.join(" "));
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(CliError::failure(format!("`{shown}` failed ({s})"))),
        Err(e) => Err(CliError::failure(format!("cannot run `{shown}`: {e}"))),
    }
}

/// What the operator does next, as commands.
fn next_steps(spec: &UnitSpec, place: &UnitPlaceArgs, unit: &str, ctl: &str) -> String {
    let mut steps = Vec::new();
    let config_dir = if place.user {
        "~/.config/clawdbot"
    } else {
        "/etc/clawdbot"
    };
    if !place.user {
        steps.push(format!(
            "the unit runs as user {SERVICE_USER}; create it once: useradd --system \
             --no-create-home --shell /usr/sbin/nologin {SERVICE_USER}"
        ));
    }
    if matches!(spec.workload, UnitWorkload::Bot { config: None }) {
        steps.push(format!(
            "config: {config_dir}/{}.yaml (secrets as KEY=value in {config_dir}/{}.env)",
            place.name, place.name
        ));
    }
    if !place.now {
        steps.push(format!("{ctl} daemon-reload && {ctl} enable --now {unit}"));
    }
    steps.push(format!(
        "{ctl} status {unit}; {}clawdbot daemon status --name {}",
        if place.user { "" } else { "sudo " },
        place.name
    ));
    steps.push(format!(
        "logs: journalctl {}-u {unit}",
        if place.user { "--user " } else { "" }
    ));
    steps
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}
