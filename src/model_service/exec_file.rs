//! `--exec-file FILE`: a model service's command line (and health URL) read from a file instead
//! of argv, so a secret in them (`--api-key K`, `/health?token=T`, `http://u:PASS@...`) is
//! in neither the systemd unit (`systemctl show`, `cat`) nor the daemon's
//! `/proc/PID/cmdline`.
//!
//! `daemon install --exec [--health-url URL]` writes both to a 0600 file and the unit hands
//! it to the daemon as a systemd credential (`LoadCredential=exec:FILE`, read back from
//! `%d/exec`). The file's first line is the command; an optional second line
//! `health-url URL` is the health URL (see [`render_exec_file`]).
//!
//! Invariants: the file is opened without following a symbolic link and must be a regular
//! file of at most [`MAX_EXEC_FILE_BYTES`], owned by this user or root, neither readable
//! nor writable by others and not group-writable (group read is allowed because systemd
//! grants the service user read on a credential through an ACL, whose mask shows as the
//! group bits); it holds one UTF-8 command line (a final line break is dropped), then at
//! most one `health-url URL` line. Errors name the file, never its contents.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The longest command file read.
pub(crate) const MAX_EXEC_FILE_BYTES: u64 = 64 * 1024;

/// What starts the second line of a command file: the health URL follows it.
const HEALTH_URL_PREFIX: &str = "health-url ";

/// What a command file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecFileContents {
    /// The model service's command line.
    pub(crate) command: String,
    /// The URL polled for the model service's health, if any.
    pub(crate) health_url: Option<String>,
}

/// The text of a command file holding `command` and `health_url` (each on one line: the
/// caller refuses line breaks in them).
pub(crate) fn render_exec_file(command: &str, health_url: Option<&str>) -> String {
    match health_url {
        Some(url) => format!("{command}\n{HEALTH_URL_PREFIX}{url}\n"),
        None => format!("{command}\n"),
    }
}

/// Permission bits a command file must not have: group write and any access by others.
const FORBIDDEN_MODE: u32 = 0o027;

/// Why a command file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecFileError {
    #[error("cannot read the --exec-file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the --exec-file {path} has mode {mode:o}: it may hold secrets, so it must not be \
         group-writable or readable by others (chmod 600 {path})"
    )]
    Open { path: PathBuf, mode: u32 },
    #[error("the --exec-file {path} belongs to uid {owner}, not to this user or root")]
    Owner { path: PathBuf, owner: u32 },
    #[error("the --exec-file {path} is larger than {MAX_EXEC_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("the --exec-file {path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("the --exec-file {path} holds no command")]
    Empty { path: PathBuf },
    #[error(
        "the --exec-file {path} holds more than the command line and a `health-url URL` \
         line; write the command on one line"
    )]
    Lines { path: PathBuf },
}

/// The command line and health URL in `path` (see the module's invariants).
pub(crate) fn read_exec_file(path: &Path) -> Result<ExecFileContents, ExecFileError> {
    let read_err = |source| ExecFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = crate::fsutil::open_regular(path, {
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        o
    })
    .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mode = meta.mode() & 0o7777;
    if mode & FORBIDDEN_MODE != 0 {
        return Err(ExecFileError::Open {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.uid() != crate::fsutil::euid() && meta.uid() != 0 {
        return Err(ExecFileError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_EXEC_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_EXEC_FILE_BYTES {
        return Err(ExecFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| ExecFileError::NotText {
        path: path.to_path_buf(),
    })?;
    let lines_err = || ExecFileError::Lines {
        path: path.to_path_buf(),
    };
    let mut lines = text.lines();
    let command = lines.next().unwrap_or("");
    let health_url = match lines.next() {
        None => None,
        Some(line) => Some(
            line.strip_prefix(HEALTH_URL_PREFIX)
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .ok_or_else(lines_err)?,
        ),
    };
    let stray_return = command.contains('\r') || health_url.is_some_and(|u| u.contains('\r'));
    if lines.next().is_some() || stray_return {
        return Err(lines_err());
    }
    if command.trim().is_empty() {
        return Err(ExecFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(ExecFileContents {
        command: command.to_string(),
        health_url: health_url.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(dir: &Path, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_one_private_line_and_refuses_anything_else_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = file_with(d, "ok", b"/bin/srv --api-key SEKRET\n", 0o600);
        assert_eq!(
            read_exec_file(&ok).unwrap().command,
            "/bin/srv --api-key SEKRET"
        );
        // systemd's credential: 0440 through an ACL mask.
        let cred = file_with(d, "cred", b"/bin/srv", 0o440);
        assert_eq!(
            read_exec_file(&cred).unwrap(),
            ExecFileContents {
                command: "/bin/srv".into(),
                health_url: None
            }
        );
        let rendered = render_exec_file("/bin/srv -k S", Some("http://h/health?token=T"));
        let both = file_with(d, "both", rendered.as_bytes(), 0o600);
        assert_eq!(
            read_exec_file(&both).unwrap(),
            ExecFileContents {
                command: "/bin/srv -k S".into(),
                health_url: Some("http://h/health?token=T".into())
            }
        );

        let cases = [
            (
                file_with(d, "world", b"/bin/srv --api-key SEKRET", 0o644),
                "chmod 600",
            ),
            (file_with(d, "gw", b"/bin/srv", 0o620), "mode 620"),
            (file_with(d, "empty", b"  \n", 0o600), "no command"),
            (file_with(d, "two", b"/bin/a\n/bin/b\n", 0o600), "one line"),
            (
                file_with(d, "three", b"/bin/a\nhealth-url http://h\nx\n", 0o600),
                "one line",
            ),
            (file_with(d, "cr", b"/bin/a\rx\n", 0o600), "one line"),
            (file_with(d, "bin", b"\xff\xfe", 0o600), "UTF-8"),
            (
                file_with(
                    d,
                    "big",
                    &vec![b'a'; MAX_EXEC_FILE_BYTES as usize + 1],
                    0o600,
                ),
                "larger than",
            ),
        ];
        for (path, want) in cases {
            let err = read_exec_file(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{path:?}: {err}");
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
            assert!(!err.contains("SEKRET"), "{err}");
        }
        let link = d.join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert!(read_exec_file(&link).is_err());
        assert!(read_exec_file(d).is_err(), "a folder");
        assert!(read_exec_file(&d.join("missing")).is_err());
    }
}
