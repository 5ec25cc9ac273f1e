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
//!   These are checked on the opened descriptor, so nothing can be swapped in between.
//!
//! Policy refusals are errors of kind `InvalidInput` whose text says why.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::fsutil::{euid, is_shared_dir, open_nofollow};

/// What kind of file a log is; decides whether it may be rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// A regular file: rotated by size.
    Regular,
    /// A character device or FIFO: written as is, never rotated.
    Stream,
}

/// Opens `path` for appending (creating a regular file, mode 0640, when missing) under
/// the rules of the module docs.
pub(crate) fn open_log(path: &Path) -> io::Result<(File, LogKind)> {
    let folder = folder_of(path);
    let shared = is_shared_dir(&fs::metadata(folder)?);
    let mut append = OpenOptions::new();
    append.append(true);
    let file = if shared {
        let mut create = append.clone();
        create.create_new(true).mode(0o640);
        match open_nofollow(path, create) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_nofollow(path, append)?,
            other => other?,
        }
    } else {
        append.create(true).mode(0o640);
        open_nofollow(path, append)?
    };
    let meta = file.metadata()?;
    let kind = kind_of(&meta)?;
    if shared {
        check_owned(&meta, kind, folder)?;
    }
    Ok((file, kind))
}

/// The checks `daemon start` and `restart` make before anything is forked or stopped:
/// a regular (or missing) log is opened as the daemon will open it (so a read-only or
/// missing folder shows now); a FIFO or device is only inspected (opening a FIFO would
/// wait for a reader).
pub(crate) fn check_log_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() || meta.file_type().is_char_device() => {
            let folder = folder_of(path);
            if is_shared_dir(&fs::metadata(folder)?) {
                check_owned(&meta, LogKind::Stream, folder)?;
            }
            Ok(())
        }
        _ => open_log(path).map(drop),
    }
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
}
