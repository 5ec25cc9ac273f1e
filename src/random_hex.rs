//! Random ids and secrets as lowercase hex.
//!
//! Invariant: the bytes come from `rand::rng()` (the thread-local generator, a CSPRNG
//! seeded from the OS), so a value is fit for a secret (the quickstart demo's) as well as
//! an id (card track ids, lease claim tokens, conversation epochs, the simulator's ids).

use rand::Rng;

/// `bytes` random bytes as `2 * bytes` lowercase hex digits.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hex_digits_per_byte_and_no_repeats() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_hex(16));
        assert_eq!(random_hex(0), "");
    }
}
