//! The journal's on-disk record: `[len: u32 LE][crc32(payload): u32 LE][payload]`, the
//! payload being one JSON [`Record`].
//!
//! Invariants: [`encode`] and [`scan_with`] are inverse; [`scan_with`] never panics on any
//! bytes; a bad frame with a valid frame somewhere after it is mid-file corruption and is
//! skipped (every later record kept), a bad frame with none after it is a torn tail (a
//! crash in the middle of a `write`) and ends the scan; a frame whose CRC matches but whose
//! body is no known record is skipped, never taken as the end.

use serde::{Deserialize, Serialize};

use crate::dingtalk::Inbound;

/// Bytes before the payload: length and CRC.
pub(crate) const HEADER_LEN: usize = 8;

/// A payload longer than this is taken as garbage (a robot message is a few KiB).
pub(crate) const MAX_PAYLOAD: usize = 4 << 20;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(crate) enum Record {
    /// A message was accepted (it is ACKed only once this record is synced).
    #[serde(rename = "accepted")]
    Accepted { id: String, msg: Box<Inbound> },
    /// The message's final reply was handed to DingTalk.
    #[serde(rename = "done")]
    Done { id: String },
    /// The reply about to be sent for a message of more than one part, as split (written
    /// before its first part goes out): a restart sends its remaining parts instead of
    /// asking the model again.
    #[serde(rename = "reply")]
    Reply {
        id: String,
        parts: Vec<String>,
        markdown: bool,
    },
    /// The first `n` parts of the message's recorded reply were accepted by DingTalk.
    #[serde(rename = "sent")]
    Sent { id: String, n: usize },
}

/// Appends the framed record to `out`; returns the number of bytes added.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) -> usize {
    encode_payload(record, out)
}

/// Appends the framed [`Record::Accepted`] of `msg` to `out`, written from the borrowed
/// message instead of a copy of it (the same bytes: a test holds the two equal); returns the
/// number of bytes added.
pub(crate) fn encode_accepted(msg: &Inbound, out: &mut Vec<u8>) -> usize {
    /// [`Record::Accepted`]'s JSON, tag first, then its fields in order.
    #[derive(Serialize)]
    #[serde(tag = "k", rename = "accepted")]
    struct AcceptedRef<'a> {
        id: &'a str,
        msg: &'a Inbound,
    }
    let accepted = AcceptedRef {
        id: &msg.msg_id,
        msg,
    };
    encode_payload(&accepted, out)
}

fn encode_payload(record: &impl Serialize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    // Serializing a derived Serialize type into a Vec cannot fail.
    serde_json::to_writer(&mut *out, record).expect("journal record serializes");
    let payload = &out[start + HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Journal bytes kept free for a pending message's completion records: its Done record and
/// a Sent record per reply part (at most [`crate::config::MAX_REPLY_PARTS`]), so they can
/// always be written, even on a full disk. Its Reply record is not covered (it is written
/// only when the file has room beyond every reserve; else the reply is sent unrecorded).
pub(crate) fn completion_reserve(id: &str) -> u64 {
    // Counted, not encoded: it runs three times per message (accept, index in and out).
    // Both records hold the id once, so each is a fixed frame plus the id's JSON length.
    static EMPTY_ID: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (done_frame, sent_frame) = *EMPTY_ID.get_or_init(|| {
        let (done, sent) = completion_records("");
        (done - json_len(""), sent - json_len(""))
    });
    let id_len = json_len(id);
    (done_frame + id_len) + (sent_frame + id_len) * crate::config::MAX_REPLY_PARTS
}

/// The encoded lengths of `id`'s Done record and of a Sent record with the largest `n`.
fn completion_records(id: &str) -> (u64, u64) {
    let mut out = Vec::new();
    let done = encode(&Record::Done { id: id.to_string() }, &mut out);
    let sent = encode(
        &Record::Sent {
            id: id.to_string(),
            n: usize::MAX,
        },
        &mut out,
    );
    (done as u64, sent as u64)
}

/// Bytes of `s` as a JSON string (quotes and escapes included), counted without a buffer.
fn json_len(s: &str) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a str to a writer that never fails cannot fail.
    serde_json::to_writer(&mut count, s).expect("a string serializes");
    count.0
}

/// One record read back.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) record: Record,
}

/// What a scan meets, in file order.
#[derive(Debug)]
pub(crate) enum Found {
    Record(Scanned),
    /// A whole frame (its CRC matches) whose body is no record this version knows: a
    /// newer version's kind after a downgrade, or a body that does not parse. Skipped.
    Unknown {
        offset: u64,
        len: u64,
    },
    /// Bytes that are no frame, followed by a valid frame later on: mid-file corruption
    /// (never a crash: records are only ever written at the end). Skipped.
    Corrupt {
        offset: u64,
        len: u64,
    },
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last whole frame: the next record is written here.
    pub(crate) valid_len: u64,
    /// True when a non-zero byte follows `valid_len` (a torn tail to clear).
    pub(crate) torn_tail: bool,
}

/// Positional reads, so a scan streams a file instead of loading it whole.
pub(crate) trait ReadAt {
    fn size(&self) -> std::io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let part = self
            .get(start..start + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

/// Bytes read at a time by [`Window`].
const WINDOW: usize = 1 << 20;

/// A sliding read buffer over a [`ReadAt`]: forward scans read each byte about once and
/// hold at most one window (or one payload) in memory.
struct Window<'a, R: ?Sized> {
    source: &'a R,
    size: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<R: ReadAt + ?Sized> Window<'_, R> {
    /// The `n` bytes at `offset`, or `None` when they run past the end.
    fn get(&mut self, offset: u64, n: usize) -> std::io::Result<Option<&[u8]>> {
        let end = offset.saturating_add(n as u64);
        if end > self.size {
            return Ok(None);
        }
        let held = self.start + self.buf.len() as u64;
        if offset < self.start || end > held {
            let want = (n.max(WINDOW) as u64).min(self.size - offset) as usize;
            self.buf.resize(want, 0);
            self.source.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }

    /// How many zero bytes start at `offset` within the window (call right after a
    /// [`get`](Self::get) of `offset`).
    fn zeros_from(&self, offset: u64) -> usize {
        let at = offset.saturating_sub(self.start) as usize;
        self.buf
            .get(at..)
            .map_or(0, |rest| rest.iter().take_while(|b| **b == 0).count())
    }

    /// The payload length of a whole frame at `offset` whose CRC matches, if any.
    fn frame_at(&mut self, offset: u64) -> std::io::Result<Option<usize>> {
        let Some(header) = self.get(offset, HEADER_LEN)? else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_PAYLOAD {
            return Ok(None);
        }
        // Every payload is a JSON object: a cheap filter before reading it whole.
        if self.get(offset + HEADER_LEN as u64, 1)? != Some(b"{".as_slice()) {
            return Ok(None);
        }
        let Some(payload) = self.get(offset + HEADER_LEN as u64, len)? else {
            return Ok(None);
        };
        Ok((crc32fast::hash(payload) == crc).then_some(len))
    }
}

/// Reads every frame of `source` in order, handing each to `each`, and says where the
/// records end.
///
/// A bad frame is mid-file corruption when a valid frame follows it somewhere (it is
/// reported as [`Found::Corrupt`] and the scan goes on from there); otherwise it is a torn
/// tail (a write cut by a crash) and the scan ends before it. Memory stays bounded by one
/// window plus one payload, whatever the file's size.
pub(crate) fn scan_with<R: ReadAt + ?Sized>(
    source: &R,
    mut each: impl FnMut(Found),
) -> std::io::Result<ScanEnd> {
    let mut w = Window {
        source,
        size: source.size()?,
        start: 0,
        buf: Vec::new(),
    };
    let mut at = 0u64;
    loop {
        if let Some(len) = w.frame_at(at)? {
            let payload = w
                .get(at + HEADER_LEN as u64, len)?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            let whole = (HEADER_LEN + len) as u64;
            match serde_json::from_slice::<Record>(payload) {
                Ok(record) => each(Found::Record(Scanned { record })),
                Err(_) => each(Found::Unknown {
                    offset: at,
                    len: whole,
                }),
            }
            at += whole;
            continue;
        }
        // Not a frame: look for the next one, noting whether anything but zeros lies between.
        let mut torn_tail = false;
        let mut next = None;
        let mut probe = at;
        while let Some(byte) = w.get(probe, 1)?.map(|b| b[0]) {
            if byte == 0 {
                // No frame starts where its 4 length bytes are all zero: skip zero runs
                // (the preallocated space) without probing each offset.
                let zeros = w.zeros_from(probe);
                if zeros > HEADER_LEN {
                    probe += (zeros - 3) as u64;
                    continue;
                }
            }
            if probe > at && w.frame_at(probe)?.is_some() {
                next = Some(probe);
                break;
            }
            torn_tail |= byte != 0;
            probe += 1;
        }
        match next {
            Some(found) => {
                each(Found::Corrupt {
                    offset: at,
                    len: found - at,
                });
                at = found;
            }
            None => {
                return Ok(ScanEnd {
                    valid_len: at,
                    torn_tail,
                })
            }
        }
    }
}

/// Every record of `bytes` and the end of the last whole frame (tests and tools).
#[cfg(test)]
pub(crate) fn scan(bytes: &[u8]) -> (Vec<Scanned>, usize) {
    let mut records = Vec::new();
    let end = scan_with(bytes, |f| {
        if let Found::Record(s) = f {
            records.push(s)
        }
    })
    .expect("reading a slice cannot fail");
    (records, end.valid_len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConversationKind;
    use crate::dingtalk::InboundContent;
    use proptest::prelude::*;

    fn message(id: &str) -> Inbound {
        Inbound {
            msg_id: id.to_string(),
            conversation_id: "cidT==".into(),
            conversation_kind: ConversationKind::Group,
            conversation_title: None,
            sender_id: "s".into(),
            sender_staff_id: Some("1".into()),
            sender_nick: "n".into(),
            content: InboundContent::Text("hello".into()),
            session_webhook: None,
            session_webhook_expires_ms: None,
            received_at_ms: 1,
            read_at: None,
            durable: Default::default(),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let mut buf = Vec::new();
        let a = Record::Accepted {
            id: "m1".into(),
            msg: Box::new(message("m1")),
        };
        let d = Record::Done { id: "m1".into() };
        let first = encode(&a, &mut buf);
        encode(&d, &mut buf);
        let whole = buf.len();
        let (recs, valid) = scan(&buf);
        assert_eq!(valid, whole);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].record, a);
        assert_eq!(recs[1].record, d);
        // Every cut inside the second record leaves exactly the first one.
        for cut in first..whole {
            let (recs, valid) = scan(&buf[..cut]);
            assert_eq!((recs.len(), valid), (1, first), "cut at {cut}");
        }
        // A flipped bit in the payload fails the CRC.
        let mut bad = buf.clone();
        bad[first + HEADER_LEN + 3] ^= 0x40;
        assert_eq!(scan(&bad).1, first);
    }

    #[test]
    fn an_accepted_record_is_written_from_the_borrowed_message_as_from_a_record() {
        let msg = message("m\"1\u{4f60}");
        let mut borrowed = Vec::new();
        let n = encode_accepted(&msg, &mut borrowed);
        let mut owned = Vec::new();
        let record = Record::Accepted {
            id: msg.msg_id.clone(),
            msg: Box::new(msg),
        };
        encode(&record, &mut owned);
        assert_eq!((n, &borrowed), (owned.len(), &owned));
        assert_eq!(scan(&borrowed).0[0].record, record);
    }

    /// Six Accepted records framed one after another, with each frame's offset.
    fn six() -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..6 {
            starts.push(buf.len());
            let id = format!("m{i}");
            encode(
                &Record::Accepted {
                    id: id.clone(),
                    msg: Box::new(message(&id)),
                },
                &mut buf,
            );
        }
        (buf, starts)
    }

    fn scan_all(bytes: &[u8]) -> (Vec<Found>, ScanEnd) {
        let mut found = Vec::new();
        let end = scan_with(bytes, |f| found.push(f)).unwrap();
        (found, end)
    }

    #[test]
    fn a_corrupt_record_mid_file_is_skipped_and_every_later_record_kept() {
        let (mut buf, starts) = six();
        let whole = buf.len();
        buf.extend_from_slice(&[0u8; 300]);
        // Every byte of record 2 (header or payload) flipped in turn: the five others stay.
        for at in starts[1]..starts[2] {
            let mut bad = buf.clone();
            bad[at] ^= 0x5a;
            let (found, end) = scan_all(&bad);
            let kept = found
                .iter()
                .filter(|f| matches!(f, Found::Record(_)))
                .count();
            assert_eq!(kept, 5, "flipped byte {at}");
            assert!(
                found
                    .iter()
                    .any(|f| matches!(f, Found::Corrupt { offset, len }
                        if *offset == starts[1] as u64 && *len == (starts[2] - starts[1]) as u64)),
                "flipped byte {at}: corruption not reported: {found:?}"
            );
            assert_eq!(
                end,
                ScanEnd {
                    valid_len: whole as u64,
                    torn_tail: false
                }
            );
        }
    }

    #[test]
    fn an_unknown_kind_at_offset_0_is_skipped_and_the_rest_kept() {
        let (rest, _) = six();
        let mut buf = Vec::new();
        for payload in [
            &br#"{"k":"from_a_newer_version","id":"x"}"#[..],
            b"{not json",
        ] {
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            buf.extend_from_slice(payload);
        }
        let unknown_len = buf.len();
        buf.extend_from_slice(&rest);
        let (found, end) = scan_all(&buf);
        assert!(
            matches!(found[0], Found::Unknown { offset: 0, .. }),
            "{found:?}"
        );
        assert!(matches!(found[1], Found::Unknown { .. }), "{found:?}");
        assert_eq!(found.len(), 8);
        assert!(found[2..].iter().all(|f| matches!(f, Found::Record(_))));
        assert_eq!(end.valid_len, (unknown_len + rest.len()) as u64);
    }

    #[test]
    fn a_torn_tail_is_still_the_end_even_with_garbage_after_it() {
        let (mut buf, starts) = six();
        buf.truncate(starts[5] + 20);
        buf.extend_from_slice(&[0u8; 64]);
        buf.extend_from_slice(b"\x07garbage, no frame");
        buf.extend_from_slice(&[0u8; 64]);
        let (found, end) = scan_all(&buf);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found.iter().all(|f| matches!(f, Found::Record(_))));
        assert_eq!(
            end,
            ScanEnd {
                valid_len: starts[5] as u64,
                torn_tail: true
            }
        );
        // Zeros only after the records: nothing torn.
        let (clean, _) = six();
        let mut zeros = clean.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        assert_eq!(
            scan_all(&zeros).1,
            ScanEnd {
                valid_len: clean.len() as u64,
                torn_tail: false
            }
        );
    }

    proptest! {
        #[test]
        fn scan_never_panics_and_never_reads_past_its_input(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (_, valid) = scan(&bytes);
            prop_assert!(valid <= bytes.len());
        }

        #[test]
        fn the_counted_completion_reserve_equals_the_encoded_records(id in "\\PC*|[\"\\\\\u{0}-\u{1f}\u{7f}a-z\u{4e00}-\u{4e10}]{0,40}") {
            let (done, sent) = completion_records(&id);
            prop_assert_eq!(
                completion_reserve(&id),
                done + sent * crate::config::MAX_REPLY_PARTS
            );
        }
    }
}
