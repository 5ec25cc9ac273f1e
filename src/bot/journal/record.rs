//! The journal's on-disk record: `[len: u32 LE][crc32(payload): u32 LE][payload]`, the
//! payload being one JSON [`Record`].
//!
//! Invariants: [`encode`] and [`scan`] are inverse; [`scan`] never panics on any bytes and
//! stops at the first record that is short, oversized, fails its CRC or does not parse, so
//! a torn tail (a crash in the middle of a `write`) is detected and can be cut off.

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
}

/// Appends the framed record to `out`; returns the number of bytes added.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) -> usize {
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

/// One record read back, with its place in the file.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub record: Record,
    pub offset: usize,
    pub len: usize,
}

/// Reads every whole, intact record from the start of `bytes`. Returns them and the
/// length of the valid prefix (everything after it is a torn or corrupt tail).
pub(crate) fn scan(bytes: &[u8]) -> (Vec<Scanned>, usize) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER_LEN) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            break;
        };
        records.push(Scanned {
            record,
            offset: at,
            len: HEADER_LEN + len,
        });
        at += HEADER_LEN + len;
    }
    (records, at)
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
        assert_eq!(recs[1].offset, first);
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

    proptest! {
        #[test]
        fn scan_never_panics_and_never_reads_past_its_input(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (_, valid) = scan(&bytes);
            prop_assert!(valid <= bytes.len());
        }
    }
}
