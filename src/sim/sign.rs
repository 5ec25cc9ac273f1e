//! The simulator's own DingTalk signatures (docs/dingtalk-protocol.md §5, §6): it signs the
//! HTTP callbacks it posts and checks the `sign` of custom-robot webhook calls.
//!
//! Deliberately independent of the bot's [`crate::dingtalk::sign`]: if both used one
//! function, a wrong algorithm in the bot would sign and verify its own mistakes and every
//! end-to-end test would pass. So HMAC-SHA256 is composed here by hand from RFC 2104 over
//! the `sha2` digest (no `hmac` crate), the signed text is assembled as bytes, and a
//! presented signature is checked by decoding it and comparing MAC bytes (not strings).
//! Both implementations are pinned to vectors from DingTalk's documented sample code
//! (run with Python's `hmac` and `openssl dgst`): see `tests/fuzz_parsers.rs`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// How far a signed timestamp may be from the simulator's clock: DingTalk allows one hour.
pub(crate) const SIGN_WINDOW_MS: u64 = 60 * 60 * 1000;

/// SHA-256 works on 64-byte blocks; HMAC pads (or hashes) the key to one block.
const BLOCK: usize = 64;

/// RFC 2104: `H((K ^ opad) || H((K ^ ipad) || text))`.
fn hmac_sha256(key: &[u8], text: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(text)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The MAC DingTalk computes: key = the secret, text = timestamp, a line feed, the secret.
fn signature_mac(timestamp: &str, secret: &str) -> [u8; 32] {
    let text: Vec<u8> = [timestamp.as_bytes(), b"\n", secret.as_bytes()].concat();
    hmac_sha256(secret.as_bytes(), &text)
}

/// The `sign` header DingTalk puts on an HTTP callback: the MAC in standard base64
/// (with `+`, `/` and `=` padding), not URL-encoded.
pub fn callback_signature(timestamp: &str, secret: &str) -> String {
    BASE64.encode(signature_mac(timestamp, secret))
}

/// True when `presented` (already URL-decoded) is the standard-base64 signature of
/// `timestamp` under `secret`. Anything that does not decode is simply wrong.
pub fn signature_matches(timestamp: &str, secret: &str, presented: &str) -> bool {
    BASE64
        .decode(presented)
        .is_ok_and(|mac| mac == signature_mac(timestamp, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DingTalk's documented inputs (the callback doc's example timestamp, the robot doc's
    /// sample secret); the output comes from DingTalk's published Python sample and
    /// `openssl dgst -sha256 -hmac`. The full table, checked against this module and the
    /// bot's, is `tests/fuzz_parsers.rs::documented_signature_vectors_hold_in_both_implementations`.
    const DOCUMENTED: (&str, &str, &str) = (
        "1577262236757",
        "this is secret",
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=",
    );

    #[test]
    fn signs_the_documented_inputs_as_dingtalks_sample_does() {
        let (ts, secret, expected) = DOCUMENTED;
        assert_eq!(callback_signature(ts, secret), expected);
        assert!(signature_matches(ts, secret, expected));
    }

    #[test]
    fn refuses_other_secrets_timestamps_and_undecodable_signs() {
        let (ts, secret, good) = DOCUMENTED;
        assert!(!signature_matches(ts, "this is secreT", good));
        assert!(!signature_matches("1577262236758", secret, good));
        // URL-safe base64 of the same MAC, and an unencoded `+` that became a space.
        assert!(!signature_matches(
            ts,
            secret,
            &good.replace('+', "-").replace('/', "_")
        ));
        assert!(!signature_matches(ts, secret, &good.replace('+', " ")));
        assert!(!signature_matches(ts, secret, ""));
    }
}
