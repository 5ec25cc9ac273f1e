//! systemd unit files for daemons, rendered from one template in the binary.
//!
//! `daemon install` writes them, and the copies in `config-templates/` are the same
//! renderings with example settings (kept fresh by `tests/operator/docs_fresh.rs`), so the
//! repository's units cannot drift from what is installed.
//!
//! Invariants:
//! - every folder the daemon writes is one systemd makes for the instance
//!   (`RuntimeDirectory=clawdbot/%i`, `StateDirectory=clawdbot/%i`, `LogsDirectory=`),
//!   which the daemon finds through `$RUNTIME_DIRECTORY` and friends
//!   ([`crate::paths::service_dirs`]), so no two instances share a socket or state folder;
//! - system units are sandboxed to a `systemd-analyze security` exposure of at most 2.5
//!   (test: `tests/operator/systemd.rs::system_units_score_ok_in_systemd_analyze_security`);
//! - values taken from the command line are quoted for systemd (`"`, `\`, `%`, `$`
//!   escaped) and control characters are refused, so they stay one argument each.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The user a system unit runs as.
pub(crate) const SERVICE_USER: &str = "clawdbot";

/// The first line of every unit clawdbot writes; `daemon uninstall` removes only such files.
pub(crate) const MARKER: &str = "# Written by `clawdbot daemon install`";

/// What a unit runs.
#[derive(Debug, Clone)]
pub(crate) enum UnitWorkload {
    /// The DingTalk bot, with an optional config file (else CONFIG_DIR/NAME.yaml).
    Bot { config: Option<PathBuf> },
    /// A supervised model service. Its command line and health URL (either may hold
    /// secrets) are never in the unit: systemd hands the file `exec_file` holding both
    /// to the daemon as the credential `exec` (`LoadCredential=`), read with
    /// `--exec-file %d/exec`.
    ModelService { exec_file: ExecFilePlace },
}

/// Where a model service unit's command file is.
#[derive(Debug, Clone)]
pub(crate) enum ExecFilePlace {
    /// `%E/clawdbot/%i.exec`: /etc/clawdbot/NAME.exec, or ~/.config/clawdbot/NAME.exec
    /// for a user unit (beside the `%i.env` secrets file).
    ConfigDir,
    /// This file (`daemon install --unit-dir`).
    At(PathBuf),
}

impl ExecFilePlace {
    /// The credential source as a unit file value: specifiers kept, a path's `%` doubled.
    fn unit_value(&self) -> Result<String, UnitError> {
        match self {
            ExecFilePlace::ConfigDir => Ok("%E/clawdbot/%i.exec".into()),
            ExecFilePlace::At(path) => {
                let text = path.display().to_string();
                if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(UnitError::Unquotable {
                        what: "the command file's path",
                    });
                }
                Ok(text.replace('%', "%%"))
            }
        }
    }
}

/// Everything a unit depends on.
#[derive(Debug, Clone)]
pub(crate) struct UnitSpec {
    pub(crate) workload: UnitWorkload,
    /// The `clawdbot` executable systemd starts.
    pub(crate) binary: PathBuf,
    /// A user unit (`systemctl --user`) rather than a system one.
    pub(crate) user: bool,
}

/// The unit instance running daemon `name` (what `journalctl -u` and `systemctl` take):
/// `clawdbot@NAME` for a bot, `clawdbot-gateway@NAME` for a model service (the unit name users already have).
pub(crate) fn unit_instance(model_service: bool, name: &str) -> String {
    let prefix = if model_service {
        "clawdbot-gateway"
    } else {
        "clawdbot"
    };
    format!("{prefix}@{name}")
}

/// A value that cannot be put in a unit file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnitError {
    #[error("{what} contains a control character (a line break?), which a unit file cannot hold")]
    ControlCharacter { what: &'static str },
    #[error("{what} contains a space or control character, which LoadCredential= cannot hold")]
    Unquotable { what: &'static str },
}

impl UnitSpec {
    /// The unit's file name for daemon `name`: `clawdbot@NAME.service` for a bot,
    /// `clawdbot-gateway@NAME.service` for a model service (an instance file of the template,
    /// so `%i` is the daemon name). `name` `None` gives the template's name.
    pub(crate) fn file_name(&self, name: Option<&str>) -> String {
        let model_service = matches!(self.workload, UnitWorkload::ModelService { .. });
        format!(
            "{}.service",
            unit_instance(model_service, name.unwrap_or(""))
        )
    }

    /// The unit file's text.
    pub(crate) fn render(&self) -> Result<String, UnitError> {
        let start = self.start_command()?;
        let mut u = String::new();
        let w = &mut u;
        line(w, MARKER);
        line(
            w,
            "# The instance name (%i) is the daemon name: `systemctl status <this unit>`,",
        );
        line(
            w,
            "# `clawdbot daemon status --name %i` (as root for a system unit) and",
        );
        line(
            w,
            "# `journalctl -u <this unit>`. Remove with `clawdbot daemon uninstall --name %i`.",
        );
        line(w, "[Unit]");
        line(w, &format!("Description={}", start.description));
        line(w, &format!("After={}", start.after));
        line(w, &format!("Wants={}", start.after));
        line(w, "");
        self.service_section(w, &start);
        line(w, "");
        line(w, "[Install]");
        line(
            w,
            if self.user {
                "WantedBy=default.target"
            } else {
                "WantedBy=multi-user.target"
            },
        );
        Ok(u)
    }

    /// How the unit starts its daemon: `ExecStart=`, the credential it loads, and how it
    /// is described and ordered.
    fn start_command(&self) -> Result<StartCommand, UnitError> {
        let mut exec = vec![
            quote(&self.binary.display().to_string(), "the clawdbot path")?,
            "daemon run --name %i".to_string(),
        ];
        let mut credential = None;
        let (description, after) = match &self.workload {
            UnitWorkload::Bot { config } => {
                if let Some(config) = config {
                    exec.push(format!(
                        "--config {}",
                        quote(&config.display().to_string(), "--config")?
                    ));
                }
                ("clawdbot DingTalk bot %i", "network-online.target")
            }
            UnitWorkload::ModelService { exec_file } => {
                credential = Some(format!("LoadCredential=exec:{}", exec_file.unit_value()?));
                exec.push("--exec-file %d/exec".to_string());
                ("clawdbot model service %i", "network.target")
            }
        };
        Ok(StartCommand {
            exec_start: exec.join(" "),
            credential,
            description,
            after,
        })
    }

    /// The `[Service]` section: the start command, systemd's notify/watchdog/restart
    /// settings, the per-instance folders and (for a system unit) the sandbox.
    fn service_section(&self, w: &mut String, start: &StartCommand) {
        line(w, "[Service]");
        // `daemon run` reports READY=1, STATUS= lines and watchdog pings.
        line(w, "Type=notify");
        line(w, "NotifyAccess=main");
        if let Some(credential) = &start.credential {
            line(
                w,
                "# The command line and health URL (they may hold secrets) are in this root-only file, not here.",
            );
            line(w, credential);
        }
        line(w, &format!("ExecStart={}", start.exec_start));
        line(w, "ExecReload=/bin/kill -HUP $MAINPID");
        line(w, "WatchdogSec=60");
        // `daemon run` drains in-flight turns for up to 10 s on SIGTERM.
        line(w, "TimeoutStopSec=20");
        line(w, "Restart=on-failure");
        line(w, "RestartSec=2");
        line(
            w,
            "# Secrets for ${VAR} references in the config (KEY=value lines).",
        );
        line(w, "EnvironmentFile=-%E/clawdbot/%i.env");
        // One folder per instance; `daemon run` uses exactly these ($RUNTIME_DIRECTORY...).
        line(w, "RuntimeDirectory=clawdbot/%i");
        line(w, "RuntimeDirectoryMode=0700");
        line(w, "StateDirectory=clawdbot/%i");
        line(w, "StateDirectoryMode=0700");
        line(w, "LogsDirectory=clawdbot");
        line(w, "LogsDirectoryMode=0700");
        line(w, "ConfigurationDirectory=clawdbot");
        line(w, "ConfigurationDirectoryMode=0755");
        line(w, "UMask=0077");
        line(w, "NoNewPrivileges=yes");
        if !self.user {
            self.system_sandbox(w);
        }
    }

    /// The sandbox of a system unit (a user manager cannot apply most of it).
    fn system_sandbox(&self, w: &mut String) {
        let model_service = matches!(self.workload, UnitWorkload::ModelService { .. });
        line(w, &format!("User={SERVICE_USER}"));
        line(w, &format!("Group={SERVICE_USER}"));
        for setting in [
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            // No PrivateUsers=: in a user namespace root's SO_PEERCRED would read as
            // nobody, and `sudo clawdbot daemon status` would be refused.
            "ProtectProc=invisible",
            "ProcSubset=pid",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "RestrictNamespaces=yes",
            "RestrictRealtime=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "RemoveIPC=yes",
            "KeyringMode=private",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "SystemCallArchitectures=native",
            "SystemCallFilter=@system-service",
            // Not ~@resources: the daemon raises its soft RLIMIT_NOFILE with setrlimit.
            "SystemCallFilter=~@privileged",
            "SystemCallErrorNumber=EPERM",
            "DevicePolicy=closed",
        ] {
            line(w, setting);
        }
        if model_service {
            line(
                w,
                "# A model server may need a GPU (add DeviceAllow=/dev/nvidia* or /dev/dri) and",
            );
            line(
                w,
                "# JIT-compiled code, so devices are closed but not private and W^X is not forced.",
            );
            line(w, "# It only serves the bot on this host:");
            line(
                w,
                "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
            );
            line(w, "IPAddressAllow=localhost");
            line(w, "IPAddressDeny=any");
        } else {
            line(w, "PrivateDevices=yes");
            line(w, "MemoryDenyWriteExecute=yes");
            line(w, "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6");
        }
    }
}

/// How a unit starts its daemon (see `Unit::start_command`).
struct StartCommand {
    exec_start: String,
    /// `LoadCredential=...` for a model service's command file.
    credential: Option<String>,
    description: &'static str,
    after: &'static str,
}

fn line(w: &mut String, text: &str) {
    let _ = writeln!(w, "{text}");
}

/// One argument for a systemd command line: double-quoted, with `\` and `"` escaped and
/// `%` / `$` doubled so systemd expands neither specifiers nor variables in it.
fn quote(value: &str, what: &'static str) -> Result<String, UnitError> {
    if value.chars().any(char::is_control) {
        return Err(UnitError::ControlCharacter { what });
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The repository's example units (`config-templates/`), rendered like `daemon install`
/// renders them: (path relative to the repository root, contents).
pub(crate) fn example_units() -> Vec<(String, Vec<u8>)> {
    let binary = Path::new("/usr/local/bin/clawdbot").to_path_buf();
    [
        UnitWorkload::Bot { config: None },
        UnitWorkload::ModelService {
            exec_file: ExecFilePlace::ConfigDir,
        },
    ]
    .into_iter()
    .map(|workload| {
        let spec = UnitSpec {
            workload,
            binary: binary.clone(),
            user: false,
        };
        let text = spec
            .render()
            .expect("the example settings hold no control characters");
        (
            format!("config-templates/{}", spec.file_name(None)),
            text.into_bytes(),
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_stay_one_argument_and_expand_nothing() {
        assert_eq!(
            quote(r#"llama "x" 50% $HOME \n"#, "t").unwrap(),
            r#""llama \"x\" 50%% $$HOME \\n""#
        );
        let err = quote("a\nExecStartPre=/bin/sh", "--exec").unwrap_err();
        assert!(err.to_string().contains("--exec"), "{err}");
    }
}
