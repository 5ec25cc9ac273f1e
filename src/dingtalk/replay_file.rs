//! The replay guard's memory on disk, so a captured (timestamp, sign) pair stays refused
//! across restarts for as long as its timestamp could verify.
//!
//! Format: one line per admitted pair, `EXPIRY_MS SIGN\n`, and one per pair given back
//! (its callback failed before the message was stored), `-EXPIRY_MS SIGN\n`; each is
//! appended with a single `write(2)` before the callback is answered (the kernel has the line once `write`
//! returns, so it survives `kill -9` of the daemon; not a power loss). Lines that do not
//! parse (a torn last line) are skipped on load. When most lines are expired the file is
//! rewritten with the live ones (a private temp file renamed over it).
//!
//! The file is opened without following links or waiting on a FIFO, and must be a
//! regular file ([`crate::fsutil::open_regular`]), in the private state folder, mode 0600.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{create_private, open_regular, read_regular};

/// Rewrite when the file holds this many more lines than live pairs (and more than
/// twice as many).
const COMPACT_SLACK: usize = 1024;

/// An append-only record of admitted pairs.
#[derive(Debug)]
pub(crate) struct ReplayFile {
    path: PathBuf,
    file: File,
    /// Lines in the file now (live or not).
    lines: usize,
}

impl ReplayFile {
    /// Opens (creating) the record at `path` and returns it with the pairs it holds that
    /// expire at or after `now_ms`, as `(expiry_ms, sign)`.
    pub(crate) fn open(path: &Path, now_ms: u64) -> io::Result<(ReplayFile, Vec<(u64, String)>)> {
        let text = match read_regular(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut lines = 0;
        // In file order: a later "given back" line undoes the pair's earlier admission.
        let mut live: Vec<(u64, String)> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut given_back = std::collections::HashSet::new();
        for line in text.lines() {
            lines += 1;
            let (released, rest) = match line.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((expiry, sign)) = parse_line(rest) else {
                continue;
            };
            if expiry < now_ms {
                continue;
            }
            if released {
                given_back.insert(sign.to_string());
            } else {
                given_back.remove(sign);
                if !at.contains_key(sign) {
                    at.insert(sign.to_string(), live.len());
                    live.push((expiry, sign.to_string()));
                }
            }
        }
        live.retain(|(_, sign)| !given_back.contains(sign));
        let file = open_append(path)?;
        Ok((
            ReplayFile {
                path: path.to_path_buf(),
                file,
                lines,
            },
            live,
        ))
    }

    /// Records one admitted pair with a single write.
    pub(crate) fn append(&mut self, expiry_ms: u64, sign: &str) -> io::Result<()> {
        let line = format!("{expiry_ms} {sign}\n");
        self.file.write_all(line.as_bytes())?;
        self.lines += 1;
        Ok(())
    }

    /// Records that an admitted pair was given back, with a single write.
    pub(crate) fn append_release(&mut self, expiry_ms: u64, sign: &str) -> io::Result<()> {
        let line = format!("-{expiry_ms} {sign}\n");
        self.file.write_all(line.as_bytes())?;
        self.lines += 1;
        Ok(())
    }

    /// True when the file is mostly expired lines given `live` pairs remembered.
    pub(crate) fn wants_compaction(&self, live: usize) -> bool {
        self.lines > live.saturating_mul(2) && self.lines - live > COMPACT_SLACK
    }

    /// Replaces the file with exactly `live` pairs.
    pub(crate) fn rewrite<'a>(
        &mut self,
        live: impl Iterator<Item = (u64, &'a str)>,
    ) -> io::Result<()> {
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let mut out = create_private(&tmp)?;
        let mut text = String::new();
        let mut lines = 0;
        for (expiry, sign) in live {
            text.push_str(&format!("{expiry} {sign}\n"));
            lines += 1;
        }
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = open_append(&self.path)?;
        self.lines = lines;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true).mode(0o600);
    open_regular(path, options)
}

fn parse_line(line: &str) -> Option<(u64, &str)> {
    let (expiry, sign) = line.split_once(' ')?;
    let sign = sign.trim();
    (!sign.is_empty()).then_some(())?;
    Some((expiry.parse().ok()?, sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_pair_is_admissible_after_a_reopen_until_admitted_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callback-replay");
        let (mut f, _) = ReplayFile::open(&path, 0).unwrap();
        f.append(100, "A").unwrap();
        f.append(100, "B").unwrap();
        f.append_release(100, "B").unwrap();
        f.append(100, "C").unwrap();
        f.append_release(100, "C").unwrap();
        f.append(100, "C").unwrap();
        drop(f);
        let (_, live) = ReplayFile::open(&path, 0).unwrap();
        let signs: Vec<&str> = live.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(signs, ["A", "C"]);
    }

    #[test]
    fn pairs_survive_a_reopen_and_expired_or_torn_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (mut f, live) = ReplayFile::open(&path, 100).unwrap();
        assert!(live.is_empty());
        f.append(150, "old").unwrap();
        f.append(500, "live").unwrap();
        drop(f);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"90")
            .unwrap();
        let (f, live) = ReplayFile::open(&path, 200).unwrap();
        assert_eq!(live, vec![(500, "live".to_string())]);
        assert_eq!(f.lines, 3);
    }

    #[test]
    fn a_mostly_expired_file_is_rewritten_with_the_live_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (mut f, _) = ReplayFile::open(&path, 0).unwrap();
        for i in 0..(COMPACT_SLACK + 10) {
            f.append(i as u64, "s").unwrap();
        }
        assert!(f.wants_compaction(1));
        f.rewrite([(9_999u64, "keep")].into_iter()).unwrap();
        f.append(10_000, "next").unwrap();
        let (_, live) = ReplayFile::open(&path, 0).unwrap();
        assert_eq!(
            live,
            vec![(9_999, "keep".to_string()), (10_000, "next".to_string())]
        );
    }
}
