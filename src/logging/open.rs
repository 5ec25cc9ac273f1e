//! Opening the daemon's log file without being steered by other users.
//!
//! Rules (see README "Paths"):
//! - the log is never opened through a symbolic link (`O_NOFOLLOW`);
//! - it is a regular file (rotated by size), or a character device or FIFO
//!   ([`LogKind::Stream`]: written as is, never rotated, renamed or truncated); anything
//!   else is refused;
//! - in a folder other users can write to ([`is_shared_dir`]: `/tmp`, another user's
//!   folder), a new log is created exclusively (`O_EXCL`: nothing planted there is reused),
//!   and an existing one must be owned by us and, when regular, have no other hard link.
//!   These are checked on the opened descriptor, so nothing can be swapped in between;
//! - an existing, non-empty regular file must start like a log of ours (a timestamp), so a
//!   path such as `/etc/passwd` is never appended to.
//!
//! Policy refusals are errors of kind `InvalidInput` whose text says why.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::{fstatat, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use rustix::fs::OFlags;

use crate::fsutil::{check_path_links, euid, is_shared_dir};

/// What kind of file a log is; decides whether it may be rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// A regular file: rotated by size.
    Regular,
    /// A character device or FIFO: written as is, never rotated.
    Stream,
}

/// The folder a log lives in, checked once ([`check_path_links`]) and then held open:
/// every later open, rename and removal is relative to this descriptor (`openat`,
/// `renameat`, `unlinkat`), so a link swapped into the path afterwards cannot move the
/// log or its rotation into another folder.
#[derive(Debug)]
pub(crate) struct LogFolder {
    dir: File,
    path: PathBuf,
}

impl LogFolder {
    /// Opens the folder of the log at `log` after checking the links on the way to it.
    pub(crate) fn of(log: &Path) -> io::Result<LogFolder> {
        check_path_links(log)?;
        let path = folder_of(log).to_path_buf();
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC);
        let dir = options.open(&path)?;
        Ok(LogFolder { dir, path })
    }

    /// Opens `name` in this folder for appending (creating a regular file, mode 0640,
    /// when missing) under the rules of the module docs. A FIFO is opened without
    /// waiting: no reader is an error saying so.
    pub(crate) fn open_log(&self, name: &OsStr) -> io::Result<(File, LogKind)> {
        let shared = is_shared_dir(&self.dir.metadata()?);
        let base = OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create = if shared {
            OFlags::CREATE | OFlags::EXCL
        } else {
            OFlags::CREATE
        };
        let file = match self.openat(name, base | create | OFlags::NONBLOCK) {
            Err(nix::Error::EEXIST) if shared => self.openat(name, base | OFlags::NONBLOCK),
            other => other,
        }
        .map_err(|e| self.explain(name, e))?;
        // Writes to a FIFO block as usual: O_NONBLOCK only kept the open from waiting.
        nix::fcntl::fcntl(
            file.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_WRONLY | OFlag::O_APPEND),
        )?;
        let meta = file.metadata()?;
        let kind = kind_of(&meta)?;
        if shared {
            check_owned(&meta, kind, &self.path)?;
        }
        if kind == LogKind::Regular && meta.len() > 0 {
            self.check_holds_a_log(name, &meta)?;
        }
        Ok((file, kind))
    }

    /// An existing, non-empty regular file is appended to only when it starts like a log
    /// line of ours (an RFC 3339 date, or a JSON record): `--log /etc/passwd` given to a
    /// root daemon must not add lines to the password file. The file read is the one just
    /// opened (same device and inode), read without following a link.
    fn check_holds_a_log(&self, name: &OsStr, opened: &fs::Metadata) -> io::Result<()> {
        let shown = self.path.join(name);
        let reader = self
            .openat(
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            )
            .map_err(|e| self.explain(name, e))?;
        let meta = reader.metadata()?;
        if (meta.dev(), meta.ino()) != (opened.dev(), opened.ino()) {
            return Err(refusal(format!(
                "{} changed while it was opened",
                shown.display()
            )));
        }
        // Room for the JSON prefix and a timestamp with nanoseconds.
        let mut head = [0u8; 64];
        let n = io::Read::read(&mut &reader, &mut head)?;
        if starts_like_a_log_line(&head[..n]) {
            return Ok(());
        }
        Err(refusal(format!(
            "{} already holds something that is not a clawdbot log (its first line does not \
             start with a timestamp); give a new or empty file, or move this one away",
            shown.display()
        )))
    }

    /// `openat` relative to the folder. rustix's, not nix 0.29's: it returns an owned
    /// descriptor (nix's returns a raw integer that only `unsafe` can own). Its error is
    /// the same errno, kept as a nix error for [`LogFolder::explain`].
    fn openat(&self, name: &OsStr, flags: OFlags) -> nix::Result<File> {
        rustix::fs::openat(
            &self.dir,
            name,
            flags,
            rustix::fs::Mode::from_raw_mode(0o640),
        )
        .map(File::from)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error()))
    }

    /// Turns `ELOOP` (a link) and `ENXIO` (a FIFO nobody reads) into words.
    fn explain(&self, name: &OsStr, e: nix::Error) -> io::Error {
        let shown = self.path.join(name);
        match e {
            nix::Error::ELOOP if self.is_link(name) => refusal(format!(
                "{} is a symbolic link (clawdbot does not follow links to its files; \
                 remove the link or give the real path)",
                shown.display()
            )),
            nix::Error::ENXIO => refusal(match self.file_type(name) {
                Some(SFlag::S_IFIFO) => format!(
                    "{} is a FIFO that nobody reads: start its reader first",
                    shown.display()
                ),
                Some(SFlag::S_IFSOCK) => format!(
                    "{} is a socket: give a file, a FIFO or a character device",
                    shown.display()
                ),
                _ => format!(
                    "{} is a device that cannot be opened now (no such device or address)",
                    shown.display()
                ),
            }),
            e => io::Error::from(e),
        }
    }

    fn is_link(&self, name: &OsStr) -> bool {
        self.file_type(name) == Some(SFlag::S_IFLNK)
    }

    /// The type bits of `name` (not following a link), if it exists.
    fn file_type(&self, name: &OsStr) -> Option<SFlag> {
        self.stat(name)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
    }

    fn stat(&self, name: &OsStr) -> Option<nix::sys::stat::FileStat> {
        fstatat(
            Some(self.dir.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
    }

    /// True when `name` exists in this folder (not following a link).
    pub(crate) fn exists(&self, name: &OsStr) -> bool {
        self.stat(name).is_some()
    }

    /// Renames `from` to `to`, both in this folder.
    pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let fd = Some(self.dir.as_raw_fd());
        Ok(renameat(fd, from, fd, to)?)
    }

    /// Removes the file `name` of this folder.
    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        Ok(unlinkat(
            Some(self.dir.as_raw_fd()),
            name,
            UnlinkatFlags::NoRemoveDir,
        )?)
    }
}

/// True when `head` (a file's first bytes) starts like a record the daemon writes: a text
/// record begins with its RFC 3339 timestamp (`2026-11-30T23:51:30.123456Z  INFO ...`), a
/// JSON record with `{"timestamp":"` and the same. The timestamp is read by humantime (as
/// `daemon logs --since` reads it), so a JSON config or a file that merely starts with
/// digits is not taken for a log.
fn starts_like_a_log_line(head: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head);
    let stamp = match head.strip_prefix(r#"{"timestamp":""#) {
        Some(json) => json.split('"').next(),
        None => head.split_whitespace().next(),
    };
    stamp.is_some_and(|s| s.contains('T') && humantime::parse_rfc3339_weak(s).is_ok())
}

/// The last component of a log path (the file name used in its [`LogFolder`]).
pub(crate) fn log_name(path: &Path) -> io::Result<OsString> {
    path.file_name().map(OsStr::to_owned).ok_or_else(|| {
        refusal(format!(
            "{} does not name a file (give a path such as /var/log/clawdbot.log)",
            path.display()
        ))
    })
}

/// Opens the log at `path` (its folder checked and held, see [`LogFolder`]).
pub(crate) fn open_log(path: &Path) -> io::Result<(File, LogKind)> {
    LogFolder::of(path)?.open_log(&log_name(path)?)
}

/// The checks `daemon start` and `restart` make before anything is forked or stopped: the
/// log is opened as the daemon will open it (FIFOs and devices without waiting), so a
/// read-only folder, a FIFO that nobody reads, a device that cannot be opened or a file
/// that is not a log shows now, before a restart stops the running daemon.
///
/// For a FIFO or device the writer is returned: the caller keeps it open until the new
/// daemon has opened its own, so a FIFO's reader never sees an end of file in between
/// (it would when the last writer closes).
pub(crate) fn check_log_path(path: &Path) -> io::Result<Option<File>> {
    let (file, kind) = open_log(path)?;
    Ok((kind == LogKind::Stream).then_some(file))
}

/// The folder a log lives in ("." for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn kind_of(meta: &fs::Metadata) -> io::Result<LogKind> {
    let t = meta.file_type();
    if t.is_file() {
        Ok(LogKind::Regular)
    } else if t.is_char_device() || t.is_fifo() {
        Ok(LogKind::Stream)
    } else {
        Err(refusal(
            "it is not a regular file, a character device or a FIFO".into(),
        ))
    }
}

/// In a shared folder, the log must be ours and (regular) have a single name.
fn check_owned(meta: &fs::Metadata, kind: LogKind, folder: &Path) -> io::Result<()> {
    let why = if meta.uid() != euid() {
        format!(
            "it belongs to uid {}, not to you (uid {})",
            meta.uid(),
            euid()
        )
    } else if kind == LogKind::Regular && meta.nlink() != 1 {
        format!("it has {} hard links", meta.nlink())
    } else {
        return Ok(());
    };
    Err(refusal(format!(
        "{why}, in {}, a folder other users can write to: remove it, or put the log in a \
         folder only you can write to",
        folder.display()
    )))
}

fn refusal(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        fs::write(&target, "root only\n").unwrap();
        let link = dir.path().join("bot.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_log(&link).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(check_log_path(&link).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "root only\n");
    }

    #[test]
    fn in_a_shared_folder_a_new_log_is_created_and_a_hard_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let (_, kind) = open_log(&shared.join("new.log")).unwrap();
        assert_eq!(kind, LogKind::Regular);
        open_log(&shared.join("new.log")).expect("our own file, one link");
        let private = dir.path().join("private");
        fs::write(&private, "x").unwrap();
        fs::hard_link(&private, shared.join("linked.log")).unwrap();
        let err = open_log(&shared.join("linked.log")).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
    }

    #[test]
    fn an_existing_file_that_is_not_a_log_is_never_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let err = open_log(&passwd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("not a clawdbot log"), "{err}");
        assert!(check_log_path(&passwd).is_err());
        assert_eq!(
            fs::read_to_string(&passwd).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\n"
        );
        for ok in [
            "2026-11-30T23:51:30.123456Z  INFO clawdbot: started\n",
            "{\"timestamp\":\"2026-11-30T23:51:30Z\"}\n",
            "",
        ] {
            let log = dir.path().join("bot.log");
            fs::write(&log, ok).unwrap();
            open_log(&log).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        assert!(!starts_like_a_log_line(b"2026-11-30 23:51"));
        assert!(!starts_like_a_log_line(b"Nov 30 23:51:30 host"));
        assert!(!starts_like_a_log_line(b"2026-13-99T99:99:99Z junk"));
        assert!(!starts_like_a_log_line(b"2026-12-01\n"));
        for json in [&b"{"[..], b"{}", b"{\"a\":1}", b"{ not json"] {
            assert!(!starts_like_a_log_line(json), "{json:?}");
        }
        for json in ["{}", "{\"listen\": \"0.0.0.0\"}\n"] {
            let config = dir.path().join("daemon.json");
            fs::write(&config, json).unwrap();
            assert!(open_log(&config).is_err(), "{json}");
            assert_eq!(fs::read_to_string(&config).unwrap(), json);
        }
    }

    #[test]
    fn a_socket_and_a_reader_less_fifo_are_each_named_for_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock.log");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = check_log_path(&socket).unwrap_err();
        assert!(err.to_string().contains("is a socket"), "{err}");
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = check_log_path(&fifo).unwrap_err();
        assert!(err.to_string().contains("FIFO that nobody reads"), "{err}");
    }
}
