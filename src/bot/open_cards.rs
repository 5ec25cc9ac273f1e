//! AI cards that were opened and not yet finalized, kept on disk so a daemon killed while
//! a card streams (even `kill -9`) finalizes that card on its next start instead of
//! leaving it "typing" forever.
//!
//! Layout: `STATE/open-cards/<outTrackId>.json`, one small file per open card holding the
//! message id and the [`CardRef`]. Kept apart from the inbox on purpose (a narrow API:
//! [`OpenCards::record`], [`OpenCards::clear`], [`OpenCards::left_open`]) so it can later
//! move into the inbox journal.
//!
//! Invariants:
//! - a record is durable before `record` returns: written to a temporary file, synced,
//!   renamed, and the folder synced; `clear` syncs the folder after the unlink;
//! - files are opened with `O_NOFOLLOW` and must be regular files: a planted symlink or
//!   FIFO is never followed or read, only reported and moved aside;
//! - a file name is the card's `outTrackId` (hex only), so no record names a path;
//! - `left_open` never loses a record it cannot read: it renames it to `*.corrupt`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dingtalk::CardRef;
use crate::fsutil::{ensure_private_dir, open_nofollow_with, UnsafeDir};

/// Largest record read back (a record is ~150 bytes).
const MAX_RECORD_BYTES: u64 = 4096;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenCardsError {
    #[error("open-cards folder: {0}")]
    Folder(#[from] UnsafeDir),
    #[error("card id {0:?} is not a hex outTrackId")]
    BadId(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One card left open: which message it answered and the card itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenCard {
    pub(crate) msg_id: String,
    pub(crate) card: CardRef,
}

/// The on-disk set of open cards.
pub(crate) struct OpenCards {
    dir: PathBuf,
}

impl OpenCards {
    /// Opens (creating, mode 0700) `state_dir/open-cards`, which must be a private
    /// folder of ours (see [`ensure_private_dir`]).
    pub(crate) fn open(state_dir: &Path) -> Result<OpenCards, OpenCardsError> {
        let dir = state_dir.join("open-cards");
        ensure_private_dir(&dir)?;
        Ok(OpenCards { dir })
    }

    fn file_for(&self, out_track_id: &str) -> Result<PathBuf, OpenCardsError> {
        let valid = !out_track_id.is_empty()
            && out_track_id.len() <= 64
            && out_track_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(OpenCardsError::BadId(out_track_id.to_string()));
        }
        Ok(self.dir.join(format!("{out_track_id}.json")))
    }

    /// Durably records that `card`, answering `msg_id`, is open.
    pub(crate) fn record(&self, msg_id: &str, card: &CardRef) -> Result<(), OpenCardsError> {
        let path = self.file_for(&card.out_track_id)?;
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&OpenCard {
            msg_id: msg_id.to_string(),
            card: card.clone(),
        })
        .map_err(|e| OpenCardsError::Write {
            path: tmp.clone(),
            source: std::io::Error::other(e),
        })?;
        let written = (|| {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true).mode(0o600);
            let mut f = open_nofollow_with(&tmp, options, libc::O_NONBLOCK)?;
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            f.write_all(&body)?;
            f.sync_all()
        })();
        written.map_err(|source| OpenCardsError::Write {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path)
            .and_then(|()| self.sync_dir())
            .map_err(|source| OpenCardsError::Write { path, source })
    }

    /// Forgets a card once it was finalized.
    pub(crate) fn clear(&self, out_track_id: &str) -> Result<(), OpenCardsError> {
        let path = self.file_for(out_track_id)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(OpenCardsError::Remove { path, source }),
        }
        self.sync_dir()
            .map_err(|source| OpenCardsError::Remove { path, source })
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Cards a previous run left open. Interrupted writes (`*.tmp`) are removed: their
    /// card was never shown as typing for long, and `record` had not returned. Records
    /// that cannot be read are moved aside as `*.corrupt` and returned in the second list.
    pub(crate) fn left_open(&self) -> (Vec<OpenCard>, Vec<PathBuf>) {
        let mut cards = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (cards, bad);
        };
        for path in entries.flatten().map(|e| e.path()) {
            match path.extension().and_then(|x| x.to_str()) {
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                Some("json") => match read_record(&path) {
                    Some(card) => cards.push(card),
                    None => {
                        let aside = path.with_extension("corrupt");
                        let _ = fs::rename(&path, &aside);
                        bad.push(aside);
                    }
                },
                _ => {}
            }
        }
        cards.sort_by(|a, b| a.card.out_track_id.cmp(&b.card.out_track_id));
        (cards, bad)
    }
}

/// Reads one record without following links or blocking on a FIFO (`O_NONBLOCK`), and
/// only from a small regular file whose name matches its content.
fn read_record(path: &Path) -> Option<OpenCard> {
    let mut options = OpenOptions::new();
    options.read(true);
    let f = open_nofollow_with(path, options, libc::O_NONBLOCK).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    let mut body = Vec::new();
    f.take(MAX_RECORD_BYTES).read_to_end(&mut body).ok()?;
    let card: OpenCard = serde_json::from_slice(&body).ok()?;
    let stem = path.file_stem()?.to_str()?;
    (stem == card.card.out_track_id).then_some(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str) -> CardRef {
        CardRef {
            out_track_id: id.into(),
            content_key: "msgContent".into(),
        }
    }

    #[test]
    fn recorded_cards_survive_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = OpenCards::open(dir.path()).unwrap();
        store.record("m1", &card("aa11")).unwrap();
        store.record("m2", &card("bb22")).unwrap();
        drop(store);
        let store = OpenCards::open(dir.path()).unwrap();
        let (open, bad) = store.left_open();
        assert!(bad.is_empty());
        assert_eq!(
            open,
            [
                OpenCard {
                    msg_id: "m1".into(),
                    card: card("aa11")
                },
                OpenCard {
                    msg_id: "m2".into(),
                    card: card("bb22")
                }
            ]
        );
        store.clear("aa11").unwrap();
        store.clear("aa11").unwrap();
        assert_eq!(store.left_open().0.len(), 1);
    }

    #[test]
    fn a_folder_others_can_write_is_refused_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cards = dir.path().join("open-cards");
        fs::create_dir(&cards).unwrap();
        fs::set_permissions(&cards, fs::Permissions::from_mode(0o777)).unwrap();
        let e = OpenCards::open(dir.path())
            .err()
            .expect("a loose folder accepted");
        let text = e.to_string();
        assert!(
            text.contains(cards.to_str().unwrap()) && text.contains("chmod 700"),
            "{text}"
        );
    }

    #[test]
    fn ids_that_could_name_a_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = OpenCards::open(dir.path()).unwrap();
        for id in ["", "../x", "a/b", "zz", &"a".repeat(65)] {
            assert!(
                matches!(store.record("m", &card(id)), Err(OpenCardsError::BadId(_))),
                "{id:?} accepted"
            );
        }
        assert!(store.left_open().0.is_empty());
    }

    #[test]
    fn symlinks_fifos_garbage_and_renamed_records_are_set_aside_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = OpenCards::open(dir.path()).unwrap();
        let cards = dir.path().join("open-cards");
        let target = dir.path().join("secret");
        fs::write(
            &target,
            br#"{"msg_id":"x","card":{"out_track_id":"cc33","content_key":"k"}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(&target, cards.join("cc33.json")).unwrap();
        nix::unistd::mkfifo(&cards.join("dd44.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::write(cards.join("ee55.json"), b"{half").unwrap();
        store.record("m", &card("ff66")).unwrap();
        fs::rename(cards.join("ff66.json"), cards.join("ab12.json")).unwrap();
        fs::write(cards.join("0a0a.tmp"), b"partial").unwrap();
        let (open, bad) = store.left_open();
        assert!(open.is_empty(), "{open:?}");
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(
            !cards.join("0a0a.tmp").exists(),
            "interrupted write left behind"
        );
        assert!(target.exists(), "the symlink's target was touched");
    }
}
