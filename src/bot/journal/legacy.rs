//! The v0.1 inbox (`STATE/inbox/*.json`, one file per message, and `STATE/inbox-done.log`),
//! read once so its messages move into the journal.
//!
//! Invariants: nothing here blocks or follows a link: entries are opened with
//! O_NOFOLLOW|O_NONBLOCK and only regular files are read (a FIFO, device, socket or
//! symlink is skipped with a log line naming it); an entry is identified by the id inside
//! it, whatever its file name; `*.tmp` files (unfinished writes of a crashed accept, never
//! ACKed) are listed for removal.

use std::fs;
use std::path::{Path, PathBuf};

use super::file::{kind_of, read_regular};
use crate::dingtalk::Inbound;

/// What the old inbox held.
#[derive(Default)]
pub(crate) struct Legacy {
    /// Answered ids, oldest first.
    pub(crate) done: Vec<String>,
    /// Messages accepted and not answered, oldest first.
    pub(crate) pending: Vec<Inbound>,
    /// Files to remove once their content is durable in the journal.
    pub(crate) migrated: Vec<PathBuf>,
    /// Files moved aside because they could not be read as a message.
    pub(crate) set_aside: Vec<PathBuf>,
}

impl Legacy {
    pub(crate) fn is_empty(&self) -> bool {
        self.done.is_empty()
            && self.pending.is_empty()
            && self.migrated.is_empty()
            && self.set_aside.is_empty()
    }
}

pub(crate) fn inbox_dir(state: &Path) -> PathBuf {
    state.join("inbox")
}

pub(crate) fn done_log(state: &Path) -> PathBuf {
    state.join("inbox-done.log")
}

/// Reads what the old inbox under `state` holds (nothing when there is none).
pub(crate) fn read(state: &Path) -> Legacy {
    let mut legacy = Legacy::default();
    let done_path = done_log(state);
    match read_regular(&done_path) {
        Ok(bytes) => {
            legacy.done = String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            legacy.migrated.push(done_path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %done_path.display(), error = %e, "old inbox answered-log skipped")
        }
    }
    let dir = inbox_dir(state);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            tracing::warn!(path = %dir.display(), kind = kind_of(&m), "old inbox is not a folder; skipped");
            return legacy;
        }
        Err(_) => return legacy,
    }
    let Ok(entries) = fs::read_dir(&dir) else {
        return legacy;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if !meta.is_file() {
            tracing::warn!(path = %path.display(), kind = kind_of(&meta), "skipped an inbox entry that is not a regular file");
            continue;
        }
        match path.extension().and_then(|x| x.to_str()) {
            Some("json") => found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), path)),
            Some("tmp") => {
                tracing::info!(path = %path.display(), "removing an unfinished inbox write (never ACKed)");
                legacy.migrated.push(path);
            }
            _ => {}
        }
    }
    found.sort();
    for (_, path) in found {
        let parsed = read_regular(&path)
            .map_err(LegacyEntryError::Read)
            .and_then(|b| parse_entry(&b));
        match parsed {
            Ok(msg) => {
                legacy.pending.push(msg);
                legacy.migrated.push(path);
            }
            Err(e) => {
                let aside = path.with_extension("corrupt");
                tracing::error!(path = %path.display(), error = %e, aside = %aside.display(), "unreadable inbox entry set aside");
                if fs::rename(&path, &aside).is_ok() {
                    legacy.set_aside.push(aside);
                }
            }
        }
    }
    legacy
}

/// Why an old inbox entry cannot be migrated (it is set aside, not lost). Only where the
/// JSON breaks is said: serde_json's own text may quote the entry's message text.
#[derive(Debug, thiserror::Error)]
enum LegacyEntryError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("not an inbox entry (JSON breaks at line {line}, column {column})")]
    Json { line: usize, column: usize },
}

/// An old inbox entry: `[id, message]`.
fn parse_entry(bytes: &[u8]) -> Result<Inbound, LegacyEntryError> {
    serde_json::from_slice::<(String, Inbound)>(bytes)
        .map(|(_, msg)| msg)
        .map_err(|e| LegacyEntryError::Json {
            line: e.line(),
            column: e.column(),
        })
}

/// Removes the migrated files, and the old inbox folder when it is empty.
pub(crate) fn remove(state: &Path, legacy: &Legacy) {
    for path in &legacy.migrated {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a migrated inbox file");
        }
    }
    let _ = fs::remove_dir(inbox_dir(state));
    let _ = super::file::sync_dir(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_entry_is_described_without_its_text() {
        let entry = br#"["m1", "private words of a user"]"#;
        let raw = serde_json::from_slice::<(String, Inbound)>(entry).unwrap_err();
        assert!(raw.to_string().contains("private words"), "{raw}");
        let e = parse_entry(entry).unwrap_err();
        assert!(matches!(e, LegacyEntryError::Json { line: 1, .. }), "{e}");
        assert!(!e.to_string().contains("private"), "{e}");
    }
}
