//! Where clawdbot keeps its files.
//!
//! One [`Layout`] decides every path. `--home DIR` (or `CLAWDBOT_HOME`) puts everything
//! under DIR; root without a home uses the FHS folders; anyone else gets XDG folders.
//! Per daemon name there is a private run folder (0700) holding the control socket, and a
//! state folder holding the pid file, the start lock and durable state.
//!
//! Under systemd (no `--home`), the folders the unit made are used as they are:
//! `$RUNTIME_DIRECTORY`, `$STATE_DIRECTORY` (each the folder of one instance, e.g.
//! `RuntimeDirectory=clawdbot/%i`), `$LOGS_DIRECTORY` and `$CONFIGURATION_DIRECTORY`
//! (see [`service_dirs`]).
//!
//! Root in the system layout also finds the daemons of system services that run as
//! another user (`User=clawdbot`): their state folder `/var/lib/clawdbot/NAME` belongs to
//! that user. Root reads it (status, logs, healthcheck, send) but never signals a pid
//! from it, since its owner could forge the record ([`DaemonPaths::state_access`]).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::exit::{CliError, Code, ErrorKind};
use crate::fsutil::UnsafeDir;

/// A folder or file of ours that cannot be used, naming the path (or variable) and the fix.
/// Maps to exit 1 (an IO failure, a session that ended) or 2 (a usage problem: an unsafe
/// folder, a bad name or home, a path too long).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathError {
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unsafe folder: {0}")]
    UnsafeFolder(UnsafeDir),
    #[error(
        "{var}={value:?} is not an absolute path (systemd sets it from the unit's folder settings; unset it or give an absolute folder)"
    )]
    NotAbsolute { var: String, value: String },
    #[error(
        "control socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets: use a shorter --home or daemon name",
        socket.display()
    )]
    SocketTooLong { socket: PathBuf, len: usize },
    #[error(
        "the session's runtime folder {} does not exist (XDG_RUNTIME_DIR of a session that ended?)",
        session.display()
    )]
    SessionGone { session: PathBuf },
    #[error(
        "{} belongs to uid {owner}, the user of the system service running daemon {name}: root reads its status but does not signal or start it from a record that user could write; use `systemctl stop|restart clawdbot@{name}` (or `sudo -u '#{owner}' clawdbot daemon ...`)",
        state.display()
    )]
    ServiceOwned {
        state: PathBuf,
        owner: u32,
        name: String,
    },
    #[error(
        "--home {}: {problem} (give a folder, or a path that does not exist yet; CLAWDBOT_HOME sets the same)",
        home.display()
    )]
    BadHome { home: PathBuf, problem: String },
    #[error(
        "invalid daemon name {0:?}: use 1-64 characters from A-Z a-z 0-9 - _ . (not starting with a dot)"
    )]
    BadName(String),
}

impl PathError {
    /// The exit code this error ends a command with.
    pub(crate) fn code(&self) -> Code {
        match self {
            PathError::Io { .. } | PathError::SessionGone { .. } => Code::Failure,
            _ => Code::Usage,
        }
    }
}

impl From<PathError> for CliError {
    fn from(e: PathError) -> Self {
        let kind = match &e {
            PathError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ErrorKind::Permission
            }
            PathError::Io { .. } | PathError::SessionGone { .. } => ErrorKind::Io,
            PathError::UnsafeFolder(_) | PathError::ServiceOwned { .. } => ErrorKind::Permission,
            _ => ErrorKind::Usage,
        };
        CliError::new(e.code(), e.to_string()).kind(kind)
    }
}

/// The longest socket path the kernel accepts (`sun_path` is 108 bytes including NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// A daemon's saved launch settings, in its state folder; its presence lists the name.
const LAUNCH_FILE: &str = "launch.json";

/// The root folders for one installation.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The folder given by `--home` (or `CLAWDBOT_HOME`); `None` for the FHS/XDG layouts.
    pub(crate) home: Option<PathBuf>,
    pub(crate) config_dir: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    /// True when `run_dir` lies in the login session's runtime folder (`XDG_RUNTIME_DIR`),
    /// which belongs to the session: clawdbot never creates it, and it vanishes at logout.
    pub(crate) run_in_session: bool,
    /// `run_dir` is systemd's `$RUNTIME_DIRECTORY`: the own folder of the daemon it is
    /// named after (`RuntimeDirectory=clawdbot/%i`), a root for any other name.
    pub(crate) run_is_instance: bool,
    /// `state_dir` is systemd's `$STATE_DIRECTORY` (same rule as `run_is_instance`).
    pub(crate) state_is_instance: bool,
    /// Root's FHS layout: state folders owned by a service user are read, not trusted
    /// for signals (see [`StateAccess::ServiceOwned`]).
    pub(crate) reads_service_folders: bool,
}

impl Layout {
    /// Resolves the layout from an explicit home (flag or env), else root/FHS, else XDG,
    /// with the folders systemd made for the service (when run by one) replacing the
    /// matching ones. A home that exists but is not a folder is a usage error naming it
    /// (a home that does not exist yet is created on first use).
    pub(crate) fn resolve(home: Option<&Path>) -> Result<Layout, PathError> {
        match home {
            Some(home) => check_home(home).map(|()| Layout::under(home)),
            None => service_dirs(Layout::system(), &|var| std::env::var_os(var)),
        }
    }

    /// Root's FHS folders, else the user's XDG folders.
    fn system() -> Layout {
        if nix::unistd::geteuid().is_root() {
            return Layout {
                home: None,
                config_dir: "/etc/clawdbot".into(),
                state_dir: "/var/lib/clawdbot".into(),
                log_dir: "/var/log/clawdbot".into(),
                run_dir: "/run/clawdbot".into(),
                run_in_session: false,
                run_is_instance: false,
                state_is_instance: false,
                reads_service_folders: true,
            };
        }
        match directories::ProjectDirs::from("", "", "clawdbot") {
            Some(d) => {
                let state = d
                    .state_dir()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| d.data_local_dir().to_path_buf());
                let session_run = d.runtime_dir().map(Path::to_path_buf);
                Layout {
                    home: None,
                    config_dir: d.config_dir().to_path_buf(),
                    log_dir: state.join("logs"),
                    run_in_session: session_run.is_some(),
                    run_dir: session_run.unwrap_or_else(|| state.join("run")),
                    state_dir: state,
                    run_is_instance: false,
                    state_is_instance: false,
                    reads_service_folders: false,
                }
            }
            None => Layout::under(Path::new(".clawdbot")),
        }
    }

    /// Everything below one folder (what `--home` gives).
    pub(crate) fn under(home: &Path) -> Layout {
        let home = absolute(home);
        Layout {
            home: Some(home.clone()),
            config_dir: home.join("config"),
            state_dir: home.join("state"),
            log_dir: home.join("logs"),
            run_dir: home.join("run"),
            run_in_session: false,
            run_is_instance: false,
            state_is_instance: false,
            reads_service_folders: false,
        }
    }

    /// The paths of one named daemon. Fails on a bad name or a socket path too long.
    pub(crate) fn daemon(&self, name: &str) -> Result<DaemonPaths, PathError> {
        validate_name(name)?;
        let (run, run_root) = instance_folder(&self.run_dir, self.run_is_instance, name);
        let socket = run.join("control.sock");
        check_socket_len(&socket)?;
        let (state, state_root) = instance_folder(&self.state_dir, self.state_is_instance, name);
        Ok(DaemonPaths {
            name: name.to_string(),
            pid_file: state.join("pid"),
            start_lock: state.join("start.lock"),
            socket,
            default_log: self.log_dir.join(format!("{name}.log")),
            default_config: self.config_dir.join(format!("{name}.yaml")),
            run,
            state,
            run_root,
            state_root,
            run_in_session: self.run_in_session,
            reads_service_folders: self.reads_service_folders,
        })
    }

    /// Names of every daemon that was ever started here and not forgotten (a state folder
    /// holding a saved launch or a pid file; a start that failed for a new name and
    /// `daemon rm` remove the launch), sorted. No state folder yet means no daemons; an unreadable
    /// one is an error naming it.
    pub(crate) fn daemon_names(&self) -> Result<Vec<String>, PathError> {
        if let Some(name) = self.instance_name() {
            return Ok(vec![name]);
        }
        let entries = match fs::read_dir(&self.state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list daemons in", &self.state_dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| {
                let dir = e.path();
                [LAUNCH_FILE, "pid"]
                    .iter()
                    .any(|f| fs::symlink_metadata(dir.join(f)).is_ok())
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Layout {
    /// The one daemon of systemd's instance state folder, named by the folder, when it
    /// was ever started there.
    fn instance_name(&self) -> Option<String> {
        if !self.state_is_instance {
            return None;
        }
        let started = ["start.lock", "pid"]
            .iter()
            .any(|f| fs::symlink_metadata(self.state_dir.join(f)).is_ok());
        let name = self.state_dir.file_name()?.to_str()?.to_string();
        (started && validate_name(&name).is_ok()).then_some(name)
    }
}

/// A daemon's folder and the root checked with it: `base` itself (checked alone: systemd
/// made it, inside a root-owned parent) when it is systemd's folder named after this
/// daemon, else `base/name` below `base`.
fn instance_folder(base: &Path, is_instance: bool, name: &str) -> (PathBuf, PathBuf) {
    if is_instance && base.file_name().is_some_and(|f| f == name) {
        (base.to_path_buf(), base.to_path_buf())
    } else {
        (base.join(name), base.to_path_buf())
    }
}

/// Replaces the folders of `base` by those systemd made for the running service:
/// `RUNTIME_DIRECTORY` and `STATE_DIRECTORY` are the own folders of the daemon they are
/// named after (the socket, the pid file and state go straight into them; a daemon of
/// another name gets a folder inside them, as in a unit with `RuntimeDirectory=clawdbot`),
/// `LOGS_DIRECTORY` and
/// `CONFIGURATION_DIRECTORY` hold `NAME.log` and `NAME.yaml`. systemd lists several
/// folders separated by `:` when a unit names several; the first is used. A value that
/// is not an absolute path is a usage error naming the variable.
pub(crate) fn service_dirs(
    mut base: Layout,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Layout, PathError> {
    let folder = |var: &str| -> Result<Option<PathBuf>, PathError> {
        let Some(value) = env(var) else {
            return Ok(None);
        };
        let value = value.to_string_lossy().into_owned();
        let first = value.split(':').next().unwrap_or_default();
        if first.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(first);
        if !path.is_absolute() {
            return Err(PathError::NotAbsolute {
                var: var.to_string(),
                value,
            });
        }
        Ok(Some(path))
    };
    if let Some(run) = folder("RUNTIME_DIRECTORY")? {
        base.run_dir = run;
        base.run_is_instance = true;
        base.run_in_session = false;
    }
    if let Some(state) = folder("STATE_DIRECTORY")? {
        base.state_dir = state;
        base.state_is_instance = true;
        base.reads_service_folders = false;
    }
    if let Some(logs) = folder("LOGS_DIRECTORY")? {
        base.log_dir = logs;
    }
    if let Some(config) = folder("CONFIGURATION_DIRECTORY")? {
        base.config_dir = config;
    }
    Ok(base)
}

/// How far the files of a daemon's state folder may be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateAccess {
    /// No state folder (no daemon was ever started).
    Missing,
    /// Ours and private: everything in it is trusted, pids in it may be signalled.
    Own,
    /// Root's system layout, a private folder of service user `owner` inside a root-owned
    /// private root: read (its socket is only looked for where this name's daemon
    /// listens), never trusted for signals, starts or removals.
    ServiceOwned { owner: u32 },
}

/// A unix socket path must fit `sun_path`.
fn check_socket_len(socket: &Path) -> Result<(), PathError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(PathError::SocketTooLong {
            socket: socket.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// The files of one named daemon.
///
/// Invariant: the start lock and the pid file live in the state folder, which does not
/// depend on the login session, so every shell of one user (ssh, su, cron, sudo) finds the
/// same daemon; the pid file records the control socket the daemon listens on, and
/// clients connect to that one ([`crate::daemon::probe::control_socket`]).
#[derive(Debug, Clone)]
pub(crate) struct DaemonPaths {
    pub(crate) name: String,
    /// Private socket folder (0700) in the run root.
    pub(crate) run: PathBuf,
    /// Where a daemon started now listens, when its folder can be made.
    pub(crate) socket: PathBuf,
    /// Durable state (launch settings, message journal), the pid file and the start lock.
    pub(crate) state: PathBuf,
    pub(crate) pid_file: PathBuf,
    pub(crate) start_lock: PathBuf,
    pub(crate) default_log: PathBuf,
    pub(crate) default_config: PathBuf,
    run_root: PathBuf,
    state_root: PathBuf,
    run_in_session: bool,
    reads_service_folders: bool,
}

impl DaemonPaths {
    /// Creates the socket folder (0700) and its root; both must be ours and private.
    /// In a session layout the session's runtime folder itself is never created: when it
    /// is gone (logged out), this fails naming it.
    pub(crate) fn ensure_run_dir(&self) -> Result<(), PathError> {
        if let Some(session) = self.gone_session() {
            return Err(PathError::SessionGone {
                session: session.to_path_buf(),
            });
        }
        ensure_owned_tree(&self.run_root, &self.run)
    }

    /// The session's runtime folder, when the run folder lies in one that no longer exists.
    fn gone_session(&self) -> Option<&Path> {
        let session = self.run_root.parent().unwrap_or(&self.run_root);
        (self.run_in_session && !session.is_dir()).then_some(session)
    }

    /// Creates the state folder (0700) and its root; both must be ours and private.
    pub(crate) fn ensure_state_dir(&self) -> Result<(), PathError> {
        ensure_owned_tree(&self.state_root, &self.state)
    }

    /// Checks the state folder and its root without creating anything: `Ok(false)` when
    /// either is missing (no daemon was ever started), an error naming the path and the
    /// fix when one is not ours or writable by others. A pid file is read only after this.
    pub(crate) fn check_state_dir(&self) -> Result<bool, PathError> {
        match self.state_access()? {
            StateAccess::Missing => Ok(false),
            StateAccess::Own => Ok(true),
            StateAccess::ServiceOwned { owner } => Err(PathError::ServiceOwned {
                state: self.state.clone(),
                owner,
                name: self.name.clone(),
            }),
        }
    }

    /// How far the state folder may be believed (see [`StateAccess`]); an error naming the
    /// path and the fix when it is unsafe. Creates nothing.
    pub(crate) fn state_access(&self) -> Result<StateAccess, PathError> {
        use crate::fsutil::check_private_dir;
        if self.state_root != self.state
            && !check_private_dir(&self.state_root).map_err(unsafe_dir)?
        {
            return Ok(StateAccess::Missing);
        }
        match check_private_dir(&self.state) {
            Ok(true) => Ok(StateAccess::Own),
            Ok(false) => Ok(StateAccess::Missing),
            Err(UnsafeDir::NotOwned { owner, .. }) if self.may_read_service_folder(owner) => {
                Ok(StateAccess::ServiceOwned { owner })
            }
            Err(e) => Err(unsafe_dir(e)),
        }
    }

    /// Root in the system layout reads a service user's state folder when only that user
    /// (and root) may write to it: not root's own, not group/world-writable, inside a root
    /// folder (checked by the caller) that is root's and private.
    fn may_read_service_folder(&self, owner: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.reads_service_folders
            && crate::fsutil::euid() == 0
            && owner != 0
            && self.state_root != self.state
            && fs::symlink_metadata(&self.state).is_ok_and(|m| m.is_dir() && m.mode() & 0o022 == 0)
    }

    /// Checks the run folder and its root without creating anything, like
    /// [`Self::check_state_dir`]: a folder there that is not ours or is writable by
    /// others is an error naming it (exit 2); missing ones are fine.
    pub(crate) fn check_run_dir(&self) -> Result<(), PathError> {
        for dir in [&self.run_root, &self.run] {
            if !crate::fsutil::check_private_dir(dir).map_err(unsafe_dir)? {
                break;
            }
        }
        Ok(())
    }

    /// Where a daemon starting (or re-binding) now should listen: the run folder's socket,
    /// or, when that folder cannot be made (the session's runtime folder is gone), a
    /// socket in the state folder.
    pub(crate) fn listen_socket(&self) -> Result<PathBuf, PathError> {
        if self.gone_session().is_none() {
            self.ensure_run_dir()?;
            return Ok(self.socket.clone());
        }
        let fallback = self.fallback_socket();
        check_socket_len(&fallback)?;
        self.ensure_state_dir()?;
        Ok(fallback)
    }

    /// The socket a daemon listens on when its run folder cannot be made.
    pub(crate) fn fallback_socket(&self) -> PathBuf {
        self.state.join("control.sock")
    }

    /// Where `daemon start` remembers how it was launched, for `restart`.
    pub(crate) fn launch_file(&self) -> PathBuf {
        self.state.join(LAUNCH_FILE)
    }

    /// Whether `daemon status` lists this daemon (see [`Layout::daemon_names`]).
    pub(crate) fn is_listed(&self) -> bool {
        [self.launch_file(), self.pid_file.clone()]
            .iter()
            .any(|f| fs::symlink_metadata(f).is_ok())
    }

    /// The install's key for message hashes in logs: in the state root, shared by every
    /// daemon of this layout.
    pub(crate) fn log_hash_key(&self) -> PathBuf {
        self.state_root.join(crate::logging::HASH_KEY_FILE)
    }
}

/// Creates `root` (with any missing parents, 0700) and `leaf` below it, then checks both
/// are folders owned by us and not writable by others (exit 2 naming the path and fix).
fn ensure_owned_tree(root: &Path, leaf: &Path) -> Result<(), PathError> {
    crate::fsutil::check_path_links(leaf).map_err(unsafe_dir)?;
    if let Some(parent) = root.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| io_error("create folder", parent, e))?;
        }
    }
    crate::fsutil::ensure_private_dir(root).map_err(unsafe_dir)?;
    crate::fsutil::ensure_private_dir(leaf).map_err(unsafe_dir)
}

/// A folder that may not hold our files is a usage error (exit 2) naming it and the fix.
fn unsafe_dir(e: UnsafeDir) -> PathError {
    match e {
        UnsafeDir::Io { path, source } => io_error("use folder", &path, source),
        e => PathError::UnsafeFolder(e),
    }
}

/// A home must be a folder, or not exist yet (it is created on first use).
fn check_home(home: &Path) -> Result<(), PathError> {
    let problem = match fs::metadata(home) {
        Ok(m) if m.is_dir() => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(_) => "not a folder".to_string(),
        Err(e) => e.to_string(),
    };
    Err(PathError::BadHome {
        home: home.to_path_buf(),
        problem,
    })
}

/// Daemon names become folder and file names: keep them boring.
pub(crate) fn validate_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PathError::BadName(name.to_string()))
    }
}

/// Creates the parent folder of a file (normal permissions).
pub(crate) fn ensure_parent(file: &Path) -> Result<(), PathError> {
    crate::fsutil::check_path_links(file).map_err(unsafe_dir)?;
    if let Some(parent) = file.parent() {
        if !parent.as_os_str().is_empty() {
            crate::fsutil::create_dirs(parent).map_err(|e| io_error("create folder", parent, e))?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (a temp file beside it, synced, then renamed).
///
/// Invariant: the file is mode 0600 from its creation on (it may hold secrets: a config,
/// a supervised command line); a leftover temp file is removed first, so no older,
/// looser mode is inherited.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    crate::fsutil::check_path_links(&tmp).map_err(unsafe_dir)?;
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io_error("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("replace", path, e))
}

/// An IO error that names what was being done and where.
pub(crate) fn io_error(doing: &'static str, path: &Path, e: io::Error) -> PathError {
    PathError::Io {
        doing,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Makes a path absolute against the current folder (without touching the disk).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("dingtalk-bot").is_ok());
        assert!(validate_name("model_gateway.2").is_ok());
        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn long_socket_paths_are_refused_with_the_path() {
        let deep = PathBuf::from("/tmp").join("d".repeat(120));
        let err = Layout::under(&deep).daemon("bot").unwrap_err();
        assert!(matches!(err, PathError::SocketTooLong { .. }), "{err}");
        assert_eq!(err.code(), Code::Usage);
        let text = err.to_string();
        assert!(
            text.contains("control.sock") && text.contains("107"),
            "{text}"
        );
    }

    #[test]
    fn systemd_folders_are_the_instance_folders_as_they_are() {
        let env = |var: &str| {
            Some(std::ffi::OsString::from(match var {
                "RUNTIME_DIRECTORY" => "/run/clawdbot/bot:/run/other",
                "STATE_DIRECTORY" => "/var/lib/clawdbot/bot",
                "LOGS_DIRECTORY" => "/var/log/clawdbot",
                "CONFIGURATION_DIRECTORY" => "/etc/clawdbot",
                _ => return None,
            }))
        };
        let layout = service_dirs(Layout::under(Path::new("/h")), &env).unwrap();
        let p = layout.daemon("bot").unwrap();
        assert_eq!(p.socket, PathBuf::from("/run/clawdbot/bot/control.sock"));
        assert_eq!(p.pid_file, PathBuf::from("/var/lib/clawdbot/bot/pid"));
        assert_eq!(p.default_log, PathBuf::from("/var/log/clawdbot/bot.log"));
        assert_eq!(p.default_config, PathBuf::from("/etc/clawdbot/bot.yaml"));
        assert_eq!(p.state_root, p.state, "an instance folder is checked alone");
        let other = layout.daemon("other").unwrap();
        assert_eq!(
            other.socket,
            PathBuf::from("/run/clawdbot/bot/other/control.sock"),
            "another name never shares the instance's folder"
        );
        assert_eq!(
            other.pid_file,
            PathBuf::from("/var/lib/clawdbot/bot/other/pid")
        );
        let relative = |var: &str| (var == "RUNTIME_DIRECTORY").then(|| "run/x".into());
        let err = service_dirs(Layout::under(Path::new("/h")), &relative).unwrap_err();
        assert!(matches!(err, PathError::NotAbsolute { .. }), "{err}");
        assert!(err.to_string().contains("RUNTIME_DIRECTORY"), "{err}");
    }
}
