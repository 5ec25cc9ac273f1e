//! File operations the journal needs, each safe against what may sit in the state folder:
//! symlinks are never followed, a FIFO or device never blocks an open (O_NONBLOCK) and is
//! refused, and renames are made durable by syncing the folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path holds when it is not a regular file, for messages.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` without following a symlink and without blocking on a FIFO; anything but
/// a regular file is an `InvalidInput` error naming its kind.
fn open_regular(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                kind_of(&meta)
            ),
        ));
    }
    Ok(file)
}

/// Reads a regular file (see [`open_regular`]).
pub(crate) fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_regular(OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens (creating, mode 0600) a regular file to read and append.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    open_regular(
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600),
        path,
    )
}

/// Creates (replacing) a regular file to write, mode 0600.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    open_regular(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600),
        path,
    )
}

/// Makes the folder's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
