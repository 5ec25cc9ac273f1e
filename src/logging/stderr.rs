//! The log writer for `--log -`: the logging worker hands it a batch of whole records
//! through a `BufWriter` (see `super::init`), which it writes to the process's stderr
//! with one `write_all` (Rust's stderr is unbuffered), so journald and container runtimes
//! see whole lines at once. Never rotated; a failed write is counted like a file's (see
//! [`super::write_errors`]).

use std::io::{self, Write};
use std::path::Path;

use super::rotate::record_error;

/// Writes log records to stderr.
pub(crate) struct StderrLog;

impl Write for StderrLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = io::stderr().lock().write_all(buf) {
            record_error("write", Path::new("stderr"), &e);
            return Err(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
