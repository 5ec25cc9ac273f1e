//! File operations the journal needs, each safe against what may sit in the state folder:
//! symlinks are never followed, a FIFO or device never blocks an open and is refused
//! (both through [`crate::fsutil::open_regular`]), and renames are made durable by syncing
//! the folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

pub(crate) use crate::fsutil::kind_of;
use crate::fsutil::open_regular;
pub(crate) use crate::fsutil::read_regular;

/// Opens (creating, mode 0600) a regular file to read and write at offsets.
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).mode(0o600);
    open_regular(path, options)
}

/// What [`zero_fill`] writes, a block at a time: a static, so it costs no heap (its
/// untouched pages are not even resident).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes zeros over `[from, to)` (extending the file when `to` is past its end), so
/// those blocks are really allocated and later overwrites change no metadata.
pub(crate) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Creates a new regular file to read and write, mode 0600, replacing what `path`
/// named: that name is removed first and the file created exclusively, so an object
/// planted there (a hard link to another file, a symlink, a FIFO) is never opened, let
/// alone truncated or written through.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::fsutil::create_private(path)
}

/// Makes the folder's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `file`'s data durable (`fdatasync`) after `delay`, the test hook
/// (`CLAWDBOT_TEST_JOURNAL_FSYNC_DELAY_MS`) standing in for a slow disk; zero otherwise.
/// Every sync of the journal file goes through here, so the hook slows them all.
pub(crate) fn sync_data_after(file: &File, delay: Duration) -> io::Result<()> {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    file.sync_data()
}
