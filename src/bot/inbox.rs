//! A small durable inbox: every accepted message is written here before any model work
//! and removed once its reply was delivered, so a daemon killed with turns in flight
//! answers them after restart.
//!
//! Invariants:
//! - a message id is accepted at most once: while pending (its file exists) or after it
//!   was completed (its id is in the bounded `done` journal), `accept` returns false;
//! - files are written to a temporary name, synced, then renamed, so a crash never leaves
//!   a half-written entry (unreadable leftovers are moved aside, never silently dropped);
//! - the `done` journal keeps the last [`DONE_KEEP`] ids (compacted when twice as long).

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Completed ids remembered across restarts.
pub const DONE_KEEP: usize = 10_000;

pub struct Inbox {
    dir: PathBuf,
    done_path: PathBuf,
    state: Mutex<DoneSet>,
}

struct DoneSet {
    order: VecDeque<String>,
    set: HashSet<String>,
    journal_lines: usize,
}

impl Inbox {
    /// Opens (creating) the inbox under `state_dir/inbox`.
    pub fn open(state_dir: &Path) -> std::io::Result<Inbox> {
        let dir = state_dir.join("inbox");
        fs::create_dir_all(&dir)?;
        let done_path = state_dir.join("inbox-done.log");
        let mut done = DoneSet {
            order: VecDeque::new(),
            set: HashSet::new(),
            journal_lines: 0,
        };
        if let Ok(f) = File::open(&done_path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                let id = line.trim().to_string();
                if !id.is_empty() {
                    done.journal_lines += 1;
                    done.remember(id);
                }
            }
        }
        Ok(Inbox {
            dir,
            done_path,
            state: Mutex::new(done),
        })
    }

    fn file_for(&self, id: &str) -> PathBuf {
        let digest = Sha256::digest(id.as_bytes());
        let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// Records `item` under `id`. False when the id is pending or already completed.
    pub fn accept<T: Serialize>(&self, id: &str, item: &T) -> std::io::Result<bool> {
        let path = self.file_for(id);
        {
            let done = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if done.set.contains(id) || path.exists() {
                return Ok(false);
            }
        }
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&(id, item)).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(true)
    }

    /// Marks `id` answered: removes its entry and journals the id.
    pub fn complete(&self, id: &str) -> std::io::Result<()> {
        let mut done = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.done_path)?;
        writeln!(journal, "{id}")?;
        done.journal_lines += 1;
        done.remember(id.to_string());
        let _ = fs::remove_file(self.file_for(id));
        if done.journal_lines > 2 * DONE_KEEP {
            let body: String = done.order.iter().map(|i| format!("{i}\n")).collect();
            let tmp = self.done_path.with_extension("tmp");
            fs::write(&tmp, body)?;
            fs::rename(&tmp, &self.done_path)?;
            done.journal_lines = done.order.len();
        }
        Ok(())
    }

    /// Entries left by a previous run, oldest first. Unreadable ones are renamed to
    /// `*.corrupt` and reported in the second list.
    pub fn pending<T: DeserializeOwned>(&self) -> (Vec<(String, T)>, Vec<PathBuf>) {
        let mut items = Vec::new();
        let mut corrupt = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (items, corrupt);
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                (
                    fs::metadata(&p)
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    p,
                )
            })
            .collect();
        files.sort();
        for (_, path) in files {
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<(String, T)>(&b).ok())
            {
                Some(item) => items.push(item),
                None => {
                    let aside = path.with_extension("corrupt");
                    let _ = fs::rename(&path, &aside);
                    corrupt.push(aside);
                }
            }
        }
        (items, corrupt)
    }
}

impl DoneSet {
    fn remember(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > DONE_KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_once_survives_reopen_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        assert!(inbox.accept("m1", &"hello").unwrap());
        assert!(
            !inbox.accept("m1", &"hello").unwrap(),
            "pending id accepted twice"
        );
        assert!(inbox.accept("m2", &"world").unwrap());
        drop(inbox);

        let inbox = Inbox::open(dir.path()).unwrap();
        let (pending, corrupt) = inbox.pending::<String>();
        assert!(corrupt.is_empty());
        let ids: Vec<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        inbox.complete("m1").unwrap();
        assert!(
            !inbox.accept("m1", &"again").unwrap(),
            "completed id accepted again"
        );
        drop(inbox);

        let inbox = Inbox::open(dir.path()).unwrap();
        assert!(
            !inbox.accept("m1", &"again").unwrap(),
            "done journal not reloaded"
        );
        assert_eq!(inbox.pending::<String>().0.len(), 1);
    }

    #[test]
    fn corrupt_entries_are_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        fs::write(dir.path().join("inbox/deadbeef.json"), b"{half").unwrap();
        let (items, corrupt) = inbox.pending::<String>();
        assert!(items.is_empty());
        assert_eq!(corrupt.len(), 1);
        assert!(corrupt[0].exists());
    }
}
