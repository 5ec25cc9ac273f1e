//! Fixed-size fingerprints of message ids, for the sets that only ask "seen before?"
//! (the stream's duplicate filter, the journal's answered ids): 16 bytes inline instead
//! of a heap-allocated string per remembered id.
//!
//! A fingerprint is the 128-bit SipHash-1-3 of the id under a key drawn from the
//! thread-local CSPRNG once per process. Two different ids share a fingerprint with
//! probability 2^-128 per pair; with the 20 000 ids these sets hold at most, a new id
//! matches a remembered one with probability below 10^-34, so even a billion messages a
//! day would drop one by a false "duplicate" about once in 10^16 years. The key is secret
//! and SipHash is a keyed PRF, so a sender who controls ids cannot aim a collision
//! either. Fingerprints are compared only within one process (the journal rebuilds its
//! set from the ids on disk at start), so a new key per process costs nothing.

use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher13};

/// The 128-bit keyed fingerprint of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IdDigest([u64; 2]);

impl IdDigest {
    pub(crate) fn of(id: &str) -> IdDigest {
        static KEY: OnceLock<[u64; 2]> = OnceLock::new();
        let [k0, k1] = *KEY.get_or_init(rand::random);
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        std::hash::Hasher::write(&mut hasher, id.as_bytes());
        let digest = hasher.finish128();
        IdDigest([digest.h1, digest.h2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_digest_different_ids_differ() {
        assert_eq!(IdDigest::of("msgA"), IdDigest::of("msgA"));
        let digests: std::collections::HashSet<IdDigest> = (0..10_000)
            .map(|i| IdDigest::of(&format!("msg{i}")))
            .collect();
        assert_eq!(digests.len(), 10_000);
        assert_ne!(IdDigest::of(""), IdDigest::of("\0"));
    }
}
