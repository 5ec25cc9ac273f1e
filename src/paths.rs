//! Where clawdbot keeps its files.
//!
//! One [`Layout`] decides every path. `--home DIR` (or `CLAWDBOT_HOME`) puts everything
//! under DIR; root without a home uses the FHS folders; anyone else gets XDG folders.
//! Per daemon name there is a private run folder (0700) holding the pid file, the control
//! socket and the start lock, and a state folder for durable state.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::exit::CliError;

/// The longest socket path the kernel accepts (`sun_path` is 108 bytes including NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The root folders for one installation.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The folder given by `--home` (or `CLAWDBOT_HOME`); `None` for the FHS/XDG layouts.
    pub home: Option<PathBuf>,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub run_dir: PathBuf,
    /// True when `run_dir` lies in the login session's runtime folder (`XDG_RUNTIME_DIR`),
    /// which belongs to the session: clawdbot never creates it, and it vanishes at logout.
    pub(crate) run_in_session: bool,
}

impl Layout {
    /// Resolves the layout from an explicit home (flag or env), else root/FHS, else XDG.
    /// A home that exists but is not a folder is a usage error naming it (a home that does
    /// not exist yet is created on first use).
    pub fn resolve(home: Option<&Path>) -> Result<Layout, CliError> {
        match home {
            Some(home) => check_home(home).map(|()| Layout::under(home)),
            None => Ok(Layout::system()),
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
                }
            }
            None => Layout::under(Path::new(".clawdbot")),
        }
    }

    /// Everything below one folder (what `--home` gives).
    pub fn under(home: &Path) -> Layout {
        let home = absolute(home);
        Layout {
            home: Some(home.clone()),
            config_dir: home.join("config"),
            state_dir: home.join("state"),
            log_dir: home.join("logs"),
            run_dir: home.join("run"),
            run_in_session: false,
        }
    }

    /// The paths of one named daemon. Fails on a bad name or a socket path too long.
    pub fn daemon(&self, name: &str) -> Result<DaemonPaths, CliError> {
        validate_name(name)?;
        let run = self.run_dir.join(name);
        let socket = run.join("control.sock");
        check_socket_len(&socket)?;
        let state = self.state_dir.join(name);
        Ok(DaemonPaths {
            name: name.to_string(),
            pid_file: state.join("pid"),
            start_lock: state.join("start.lock"),
            socket,
            default_log: self.log_dir.join(format!("{name}.log")),
            default_config: self.config_dir.join(format!("{name}.yaml")),
            run,
            state,
            run_root: self.run_dir.clone(),
            state_root: self.state_dir.clone(),
            run_in_session: self.run_in_session,
        })
    }

    /// Names of every daemon that was ever started here (a state folder holding a start
    /// lock or a pid file), sorted. No state folder yet means no daemons; an unreadable
    /// one is an error naming it.
    pub fn daemon_names(&self) -> Result<Vec<String>, CliError> {
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
                ["start.lock", "pid"]
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

/// A unix socket path must fit `sun_path`.
fn check_socket_len(socket: &Path) -> Result<(), CliError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(CliError::usage(format!(
            "control socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of \
             unix sockets: use a shorter --home or daemon name",
            socket.display()
        )));
    }
    Ok(())
}

/// The files of one named daemon.
///
/// Invariant: the start lock and the pid file live in the state folder, which does not
/// depend on the login session, so every shell of one user (ssh, su, cron, sudo) finds the
/// same daemon; the pid file records the control socket the daemon listens on, and
/// clients connect to that one ([`DaemonPaths::control_socket`]).
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    pub name: String,
    /// Private socket folder (0700) in the run root.
    pub run: PathBuf,
    /// Where a daemon started now listens, when its folder can be made.
    pub socket: PathBuf,
    /// Durable state (launch settings, inbox), the pid file and the start lock.
    pub state: PathBuf,
    pub pid_file: PathBuf,
    pub start_lock: PathBuf,
    pub default_log: PathBuf,
    pub default_config: PathBuf,
    run_root: PathBuf,
    state_root: PathBuf,
    run_in_session: bool,
}

impl DaemonPaths {
    /// Creates the socket folder (0700) and its root; both must be ours and private.
    /// In a session layout the session's runtime folder itself is never created: when it
    /// is gone (logged out), this fails naming it.
    pub fn ensure_run_dir(&self) -> Result<(), CliError> {
        if let Some(session) = self.gone_session() {
            return Err(CliError::failure(format!(
                "the session's runtime folder {} does not exist (XDG_RUNTIME_DIR of a \
                 session that ended?)",
                session.display()
            )));
        }
        ensure_owned_tree(&self.run_root, &self.run)
    }

    /// The session's runtime folder, when the run folder lies in one that no longer exists.
    fn gone_session(&self) -> Option<&Path> {
        let session = self.run_root.parent().unwrap_or(&self.run_root);
        (self.run_in_session && !session.is_dir()).then_some(session)
    }

    /// Creates the state folder (0700) and its root; both must be ours and private.
    pub fn ensure_state_dir(&self) -> Result<(), CliError> {
        ensure_owned_tree(&self.state_root, &self.state)
    }

    /// Checks the state folder and its root without creating anything: `Ok(false)` when
    /// either is missing (no daemon was ever started), an error naming the path and the
    /// fix when one is not ours or writable by others. A pid file is read only after this.
    pub(crate) fn check_state_dir(&self) -> Result<bool, CliError> {
        for dir in [&self.state_root, &self.state] {
            if !crate::fsutil::check_private_dir(dir).map_err(unsafe_dir)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks the run folder and its root without creating anything, like
    /// [`Self::check_state_dir`]: a folder there that is not ours or is writable by
    /// others is an error naming it (exit 2); missing ones are fine.
    pub(crate) fn check_run_dir(&self) -> Result<(), CliError> {
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
    pub(crate) fn listen_socket(&self) -> Result<PathBuf, CliError> {
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

    /// The socket to connect to: the one the pid file records, else [`Self::socket`].
    pub(crate) fn control_socket(&self) -> PathBuf {
        crate::daemon::pidfile::recorded_socket(&self.pid_file)
            .unwrap_or_else(|| self.socket.clone())
    }

    /// Where `daemon start` remembers how it was launched, for `restart`.
    pub fn launch_file(&self) -> PathBuf {
        self.state.join("launch.json")
    }

    /// The install's key for message hashes in logs: in the state root, shared by every
    /// daemon of this layout.
    pub(crate) fn log_hash_key(&self) -> PathBuf {
        self.state_root.join(crate::logging::HASH_KEY_FILE)
    }
}

/// Creates `root` (with any missing parents, 0700) and `leaf` below it, then checks both
/// are folders owned by us and not writable by others (exit 2 naming the path and fix).
fn ensure_owned_tree(root: &Path, leaf: &Path) -> Result<(), CliError> {
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
fn unsafe_dir(e: crate::fsutil::UnsafeDir) -> CliError {
    match e {
        crate::fsutil::UnsafeDir::Io { path, source } => io_error("use folder", &path, source),
        e => CliError::usage(format!("unsafe folder: {e}")),
    }
}

/// A home must be a folder, or not exist yet (it is created on first use).
fn check_home(home: &Path) -> Result<(), CliError> {
    let problem = match fs::metadata(home) {
        Ok(m) if m.is_dir() => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(_) => "not a folder".to_string(),
        Err(e) => e.to_string(),
    };
    Err(CliError::usage(format!(
        "--home {}: {problem} (give a folder, or a path that does not exist yet; \
         CLAWDBOT_HOME sets the same)",
        home.display()
    )))
}

/// Daemon names become folder and file names: keep them boring.
pub fn validate_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid daemon name {name:?}: use 1-64 characters from A-Z a-z 0-9 - _ . \
             (not starting with a dot)"
        )))
    }
}

/// Creates the parent folder of a file (normal permissions).
pub fn ensure_parent(file: &Path) -> Result<(), CliError> {
    crate::fsutil::check_path_links(file).map_err(unsafe_dir)?;
    if let Some(parent) = file.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|e| io_error("create folder", parent, e))?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (a temp file beside it, synced, then renamed).
///
/// Invariant: the file is mode 0600 from its creation on (it may hold secrets: a config,
/// a supervised command line); a leftover temp file is removed first, so no older,
/// looser mode is inherited.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
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
pub fn io_error(doing: &str, path: &Path, e: io::Error) -> CliError {
    CliError::failure(format!("cannot {doing} {}: {e}", path.display()))
}

/// Makes a path absolute against the current folder (without touching the disk).
pub fn absolute(p: &Path) -> PathBuf {
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
        assert!(err.message.contains("control.sock"), "{}", err.message);
        assert!(err.message.contains("107"), "{}", err.message);
    }
}
