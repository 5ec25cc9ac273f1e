//! A daemon's claim on its name: the pid file it holds locked (in the name's state
//! folder) and the control socket it listens on (in the run folder, or in the state
//! folder when the session's runtime folder is gone), which the pid file records.
//!
//! Invariants:
//! - the claim removes or replaces a file in its folders only when it is provably its
//!   own (the inode it locked or bound) or provably nobody's (a pid file whose lock is
//!   free); a pid file locked by another process means another daemon took the name;
//! - dropping the claim, on every exit path (failed starts included), removes the files
//!   that are still its own, the socket first, then the pid file, then unlocks;
//! - [`Claim::heal`] puts back a pid file or socket that was deleted or replaced by hand,
//!   or whose folder vanished (the daemon calls it every [`HEAL_INTERVAL`]); a socket
//!   re-bound elsewhere is recorded in the pid file (replaced whole, never half-written).
//!   It works under the name's start lock, so it never races a `daemon start`, and it
//!   costs two `stat`s when nothing changed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::CliError;
use crate::paths::{io_error, DaemonPaths};

use super::pidfile::{
    lock_state, open_lock_file, read_record, try_lock_exclusive, FileId, LockState, PidLock,
    TryLock,
};

/// How often a running daemon checks that its pid file and socket are still in place.
pub(crate) const HEAL_INTERVAL: Duration = Duration::from_secs(2);

/// The files this daemon holds; see the module docs.
pub(crate) struct Claim {
    paths: DaemonPaths,
    pid: PidLock,
    /// Where this daemon listens (or will, before [`Claim::bind`]).
    socket_path: PathBuf,
    /// The socket the pid file names; differs from `socket_path` only until a heal
    /// manages to record a re-bound socket.
    recorded: PathBuf,
    /// The socket file this daemon bound, once bound.
    socket: Option<FileId>,
}

/// What [`Claim::heal`] found.
pub(crate) enum Healed {
    /// Both files are in place.
    Intact,
    /// A `daemon start` holds the start lock: look again later.
    Busy,
    /// Files were put back (`what` names them); a new listener when the socket was.
    Restored {
        what: String,
        listener: Option<UnixListener>,
    },
    /// Another daemon holds the name now; this one should stop.
    Lost(String),
    /// Could not check or restore (the reason names the path); try again later.
    Failed(String),
}

impl Claim {
    /// Takes the name: checks (creating) the state folder, chooses the socket and locks
    /// the pid file that records it. Fails when another daemon holds it.
    pub(crate) fn acquire(paths: &DaemonPaths) -> Result<Claim, CliError> {
        paths.ensure_state_dir()?;
        let socket_path = paths.listen_socket()?;
        let pid = PidLock::acquire(&paths.pid_file, &socket_path)
            .map_err(|e| io_error("lock", &paths.pid_file, e))?
            .ok_or_else(|| {
                CliError::failure(format!("daemon {:?} is already running", paths.name))
            })?;
        // The start lock [`Claim::heal`] works under exists from here on.
        let _ = open_lock_file(&paths.start_lock);
        Ok(Claim {
            paths: paths.clone(),
            pid,
            recorded: socket_path.clone(),
            socket_path,
            socket: None,
        })
    }

    /// Binds the control socket with mode 0600. Whatever file is at its path is replaced:
    /// this claim holds the name, so no live daemon serves that file.
    pub(crate) fn bind(&mut self) -> Result<UnixListener, CliError> {
        let path = &self.socket_path;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove the old socket", path, e).into()),
        }
        let listener = UnixListener::bind(path).map_err(|e| io_error("listen on", path, e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("set mode 0600 on", path, e))?;
        let id = FileId::of_path(path)
            .ok()
            .flatten()
            .ok_or_else(|| CliError::failure(format!("{} vanished once bound", path.display())))?;
        self.socket = Some(id);
        Ok(listener)
    }

    /// Checks that the pid file and the socket are still this daemon's and puts back
    /// what is missing or was replaced by a file nobody holds.
    pub(crate) fn heal(&mut self) -> Healed {
        if self.pid.holds_path() && self.socket_in_place() && self.recorded == self.socket_path {
            return Healed::Intact;
        }
        let _start_lock = match self.try_start_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => return Healed::Busy,
            Err(e) => return Healed::Failed(e.message),
        };
        let pid_restored = match self.heal_pid() {
            Ok(restored) => restored,
            Err(outcome) => return outcome,
        };
        let listener = match self.socket_in_place() {
            true => None,
            false => match self.rebind() {
                Ok(l) => Some(l),
                Err(e) => return Healed::Failed(e.message),
            },
        };
        let recorded = match self.record_socket() {
            Ok(changed) => changed,
            Err(e) => return Healed::Failed(e.message),
        };
        let what = [
            pid_restored.then(|| self.paths.pid_file.display().to_string()),
            listener
                .as_ref()
                .map(|_| self.socket_path.display().to_string()),
            recorded.then(|| format!("the socket's path in {}", self.paths.pid_file.display())),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ");
        Healed::Restored { what, listener }
    }

    /// Where the control socket lives.
    pub(crate) fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// True when the socket was never bound or its file is still the one bound.
    fn socket_in_place(&self) -> bool {
        match self.socket {
            None => true,
            Some(id) => FileId::of_path(&self.socket_path).ok().flatten() == Some(id),
        }
    }

    /// Binds again where a daemon would listen now: the same path when its folder can be
    /// made again, the state folder when the session's runtime folder is gone.
    fn rebind(&mut self) -> Result<UnixListener, CliError> {
        self.socket_path = self.paths.listen_socket()?;
        self.bind()
    }

    /// Makes the pid file name the socket this daemon listens on; true when it changed.
    fn record_socket(&mut self) -> Result<bool, CliError> {
        if self.recorded == self.socket_path {
            return Ok(false);
        }
        self.pid
            .rewrite(&self.socket_path)
            .map_err(|e| io_error("update", &self.paths.pid_file, e))?;
        self.recorded = self.socket_path.clone();
        Ok(true)
    }

    /// The start lock, if no `daemon start` holds it right now.
    fn try_start_lock(&self) -> Result<Option<fs::File>, CliError> {
        let path = &self.paths.start_lock;
        self.paths.ensure_state_dir()?;
        let file = open_lock_file(path).map_err(|e| io_error("open", path, e))?;
        match try_lock_exclusive(file) {
            Ok(TryLock::Acquired(f)) => Ok(Some(f)),
            Ok(TryLock::HeldByOther) => Ok(None),
            Err(e) => Err(io_error("lock", path, e).into()),
        }
    }

    /// Puts a fresh locked pid file in place unless ours is there; true when it did.
    fn heal_pid(&mut self) -> Result<bool, Healed> {
        if self.pid.holds_path() {
            return Ok(false);
        }
        let path = &self.paths.pid_file;
        match lock_state(path) {
            LockState::Held => {
                let by = read_record(path)
                    .map(|r| format!("pid {}", r.pid))
                    .unwrap_or_else(|| "another process".into());
                return Err(Healed::Lost(format!(
                    "{} was replaced and is held by {by}",
                    path.display()
                )));
            }
            LockState::Free => {
                let _ = fs::remove_file(path);
            }
            LockState::Missing => {}
            LockState::Unknown(reason) => return Err(Healed::Failed(reason)),
        }
        match PidLock::create_at(path, &self.socket_path) {
            Ok(Some(lock)) => {
                // The old lock's inode has no path any more: dropping it removes nothing.
                self.pid = lock;
                self.recorded = self.socket_path.clone();
                Ok(true)
            }
            Ok(None) => Err(Healed::Failed(format!(
                "a file appeared at {} while it was being restored",
                path.display()
            ))),
            Err(e) => Err(Healed::Failed(io_error("restore", path, e).to_string())),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.socket.is_some() && self.socket_in_place() {
            let _ = fs::remove_file(&self.socket_path);
        }
        // Then `pid` drops: it removes the pid file if still ours, and unlocks.
    }
}
