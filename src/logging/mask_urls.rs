//! The log writer's last step: URL passwords masked in every record, whatever its format.
//!
//! Invariant: no record reaches the file with the password of a URL's user-info
//! ([`crate::redact_url`]), whoever logged it (an HTTP error quoting a URL included).
//! The formatter hands each record to the writer in one `write` call, so a URL is never
//! split across calls; should one ever be, the worst case is an unmasked fragment of a
//! record, never a lost or reordered byte.

use std::io::{self, Write};

use crate::redact_url::redact_url;

/// Wraps the log's writer.
#[derive(Clone)]
pub(crate) struct MaskUrls<W>(pub(crate) W);

impl<W: Write> Write for MaskUrls<W> {
    /// Writes all of `buf` (masked) or fails: the count returned is always `buf.len()`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact_url(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for MaskUrls<W>
{
    type Writer = MaskUrls<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        MaskUrls(self.0.make_writer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_whole_with_its_passwords_masked() {
        let mut w = MaskUrls(Vec::new());
        let record =
            b"WARN model service is not healthy url=http://u:pw1@h/x detail=GET http://u:pw1@h/x\n";
        assert_eq!(w.write(record).unwrap(), record.len());
        let text = String::from_utf8(w.0).unwrap();
        assert!(
            !text.contains("pw1") && text.ends_with("u:***@h/x\n"),
            "{text}"
        );
    }
}
