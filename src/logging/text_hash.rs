//! What the log may say about user text: its length, and a keyed hash that lets an
//! operator match two records of the same text without the log revealing it.
//!
//! An unkeyed hash of a short text is a lookup away from the text (every 6-digit code
//! hashes in about a second), so the hash is HMAC-SHA256 under a random 32-byte key made
//! once per install (`STATE/log-hash.key`, mode 0600, created beside the daemons' state
//! folders) and loaded when a daemon starts. A process without the key (the CLI, or a
//! daemon whose key file is unusable) logs lengths only.
//!
//! Invariants: the key file is created complete and 0600 or not at all (written to a
//! private temp file, then hard-linked into place, which fails if another daemon won the
//! race: that daemon's key is used); it is never followed through a symlink, and a key
//! file that others may read, or of the wrong size, is not used (and not replaced).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::Sha256;

use crate::fsutil::{create_private, euid, open_nofollow_with};

/// Bytes of key material.
const KEY_LEN: usize = 32;

/// Bytes of the HMAC shown in the log (8 hex digits).
pub(crate) const SHOWN_BYTES: usize = 4;

/// The file name of the key in the state root.
pub(crate) const KEY_FILE: &str = "log-hash.key";

/// The install's key, once a daemon loaded it.
static KEY: OnceLock<HashKey> = OnceLock::new();

/// A key for [`text_for_log`]'s hashes.
#[derive(Clone)]
pub(crate) struct HashKey([u8; KEY_LEN]);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(***)")
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot {doing} log hash key {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("log hash key {path} is not a private file (mode {mode:o}, owner uid {uid}); message hashes are left out of the log until it is chmod 600 and owned by this user")]
    NotPrivate { path: PathBuf, mode: u32, uid: u32 },
    #[error("log hash key {path} holds {len} bytes, not {KEY_LEN}; message hashes are left out of the log until it is removed (a new one is made at the next start)")]
    WrongSize { path: PathBuf, len: u64 },
}

impl HashKey {
    /// Reads the key at `path`, creating it first if there is none.
    pub(crate) fn load_or_create(path: &Path) -> Result<HashKey, KeyError> {
        match read(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                create(path)?;
                read(path)
            }
            other => other,
        }
    }

    /// HMAC-SHA256 of `text` under this key, the first [`SHOWN_BYTES`] as hex.
    pub(crate) fn short_mac(&self, text: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(text.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag.iter()
            .take(SHOWN_BYTES)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Makes `key` the one [`text_for_log`] uses in this process (the first call wins).
pub(crate) fn install(key: HashKey) {
    let _ = KEY.set(key);
}

fn io_err<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<HashKey, KeyError> {
    let mut options = OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: a FIFO planted at the key's path is opened at once (then refused below as
    // not a regular file) instead of hanging the daemon's start until a writer appears.
    let mut file =
        open_nofollow_with(path, options, libc::O_NONBLOCK).map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("inspect", path))?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 || meta.uid() != euid() {
        return Err(KeyError::NotPrivate {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
        });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyError::WrongSize {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key).map_err(io_err("read", path))?;
    Ok(HashKey(key))
}

/// Writes a fresh key to a private temp file and links it to `path`; losing the race to
/// another process is fine (its key stays). The folder is the daemon's state root, which
/// exists and is checked private before a daemon starts.
fn create(path: &Path) -> Result<(), KeyError> {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| io_err("generate", path)(io::Error::other(e)))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let written = create_private(&tmp)
        .and_then(|mut f| {
            f.write_all(&key)?;
            f.sync_all()
        })
        .map_err(io_err("create", &tmp));
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_err("create", path)(e)),
        _ => Ok(()),
    });
    let _ = fs::remove_file(&tmp);
    linked
}

/// What may be logged about a piece of user text: its length and, when this process has
/// the install's key, a short keyed hash; the text itself when the operator opted in.
pub(crate) fn text_for_log(text: &str, log_message_text: bool) -> String {
    describe(text, log_message_text, KEY.get())
}

fn describe(text: &str, log_message_text: bool, key: Option<&HashKey>) -> String {
    if log_message_text {
        return format!("{text:?}");
    }
    let chars = text.chars().count();
    match key {
        Some(key) => format!("<{chars} chars, hmac:{}>", key.short_mac(text)),
        None => format!("<{chars} chars>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = HashKey::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = HashKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        assert_ne!(first.0, [0u8; KEY_LEN]);
        assert_eq!(first.short_mac("123456").len(), 2 * SHOWN_BYTES);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn loose_links_and_wrong_sizes_are_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, [7u8; KEY_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            HashKey::load_or_create(&path),
            Err(KeyError::NotPrivate { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, [7u8; 3]).unwrap();
        assert!(matches!(
            HashKey::load_or_create(&path),
            Err(KeyError::WrongSize { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), [7u8; 3], "left as it was");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            HashKey::load_or_create(&link),
            Err(KeyError::Io { .. })
        ));
    }

    /// A FIFO at the key's path is refused at once, not waited on (the daemon's start read
    /// the key with a blocking open and hung until something wrote to the FIFO).
    #[test]
    fn a_fifo_at_the_key_path_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(HashKey::load_or_create(&probe).is_err());
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("loading the key waited on the FIFO");
        assert!(refused, "a FIFO was taken as the key");
    }

    #[test]
    fn the_text_shows_only_when_asked_and_the_hash_only_with_a_key() {
        assert_eq!(describe("canary-XYZ", false, None), "<10 chars>");
        let key = HashKey([9u8; KEY_LEN]);
        let shown = describe("canary-XYZ", false, Some(&key));
        assert_eq!(
            shown,
            format!("<10 chars, hmac:{}>", key.short_mac("canary-XYZ"))
        );
        assert!(!shown.contains("canary"));
        assert!(describe("canary-XYZ", true, Some(&key)).contains("canary"));
    }
}
