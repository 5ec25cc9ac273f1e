//! Replay guard for HTTP callbacks (docs/dingtalk-protocol.md §6). DingTalk's `sign` covers only
//! the timestamp and the app secret, not the body, so a captured (timestamp, sign) pair would
//! otherwise carry any body for as long as the timestamp stays inside the skew window.
//!
//! Invariants: a `sign` is admitted once for as long as its timestamp could still pass
//! verification (until `timestamp + MAX_SKEW_MS`), and forgotten after; at most `capacity`
//! signs are remembered, and when that many are all still live a new one is refused
//! ([`ReplayRefusal::Full`]) rather than evicting one, because an evicted sign could be
//! replayed. Only callbacks that passed signature verification reach the guard, so only
//! the secret's holder can fill it.
//!
//! With a file ([`ReplayGuard::with_file`]) every admitted pair is recorded on disk
//! before it is admitted (see [`super::replay_file`]) and the live ones are reloaded at
//! start, so a restart does not reopen the window. A pair that cannot be recorded is
//! refused ([`ReplayRefusal::Unrecorded`]): admitting it would let it replay after a
//! restart. A released pair is recorded as released too, so after a restart
//! it is as admissible as before.
//!
//! A pair is held while its callback is handled and consumed only once the message was
//! stored: a callback that failed before that (503, bad body, cancelled) [`release`s]
//! its pair, so DingTalk's identical retry is admitted instead of refused as a replay.
//! While one request holds a pair, a concurrent one with the same pair is refused.
//! Because the sign covers only the timestamp, two different messages signed in the same
//! millisecond share one pair and the second is refused: the price of refusing a captured
//! pair carrying another body.
//!
//! [`release`s]: ReplayGuard::release

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use std::path::Path;

use super::replay_file::ReplayFile;
use super::sign::MAX_SKEW_MS;

/// Signs remembered at most (about 10 MB; at the usual one-hour life of an entry, 14
/// callbacks a second sustained).
pub const REPLAY_CAPACITY: usize = 50_000;

/// Why a verified callback was refused anyway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayRefusal {
    #[error("this timestamp and sign were already used (replay)")]
    Replayed,
    #[error("{0} recent callbacks are remembered, the most allowed; try again later")]
    Full(usize),
    #[error("the callback could not be recorded against replay ({0}); try again later")]
    Unrecorded(String),
}

/// Signs seen recently, each with the time after which its timestamp can no longer verify.
pub struct ReplayGuard {
    capacity: usize,
    live: HashSet<String>,
    /// Every live or released sign once, until its expiry; `live` and `released` are
    /// disjoint and together hold exactly the signs in here.
    by_expiry: BinaryHeap<Reverse<(u64, String)>>,
    file: Option<ReplayFile>,
    /// Signs given back by [`ReplayGuard::release`] whose expiry entry is still queued.
    released: HashSet<String>,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            live: HashSet::new(),
            by_expiry: BinaryHeap::new(),
            file: None,
            released: HashSet::new(),
        }
    }

    /// A guard that records admitted pairs in the file at `path` and starts with the
    /// pairs recorded there that have not expired at `now_ms` (at most `capacity`).
    pub(crate) fn with_file(
        capacity: usize,
        path: &Path,
        now_ms: u64,
    ) -> std::io::Result<ReplayGuard> {
        let (file, recorded) = ReplayFile::open(path, now_ms)?;
        let mut guard = ReplayGuard::new(capacity);
        for (expires, sign) in recorded {
            if guard.live.len() >= guard.capacity {
                break;
            }
            if guard.live.insert(sign.clone()) {
                guard.by_expiry.push(Reverse((expires, sign)));
            }
        }
        guard.file = Some(file);
        Ok(guard)
    }

    /// Admits the verified pair (`timestamp_ms`, `sign`) at `now_ms`, or refuses a pair
    /// already admitted (or a new one when the guard is full).
    pub fn admit(
        &mut self,
        timestamp_ms: u64,
        sign: &str,
        now_ms: u64,
    ) -> Result<(), ReplayRefusal> {
        self.forget_expired(now_ms);
        if self.live.contains(sign) {
            return Err(ReplayRefusal::Replayed);
        }
        if self.released.contains(sign) {
            // Its expiry entry is still queued (a sign always has the same timestamp); the
            // file records the admission again, as it recorded the release.
            if let Some(file) = &mut self.file {
                let expires = timestamp_ms.saturating_add(MAX_SKEW_MS);
                file.append(expires, sign)
                    .map_err(|e| ReplayRefusal::Unrecorded(e.to_string()))?;
            }
            self.released.remove(sign);
            self.live.insert(sign.to_string());
            return Ok(());
        }
        if self.by_expiry.len() >= self.capacity {
            return Err(ReplayRefusal::Full(self.capacity));
        }
        let expires = timestamp_ms.saturating_add(MAX_SKEW_MS);
        if let Some(file) = &mut self.file {
            file.append(expires, sign)
                .map_err(|e| ReplayRefusal::Unrecorded(e.to_string()))?;
        }
        self.live.insert(sign.to_string());
        self.by_expiry.push(Reverse((expires, sign.to_string())));
        Ok(())
    }

    /// Gives back an admitted `sign` whose callback failed before its message was stored,
    /// so the same pair is admitted again. A sign not live is left alone.
    pub fn release(&mut self, sign: &str) {
        if !self.live.remove(sign) {
            return;
        }
        self.released.insert(sign.to_string());
        let expires = self
            .by_expiry
            .iter()
            .find(|Reverse((_, s))| s == sign)
            .map(|Reverse((e, _))| *e);
        if let (Some(file), Some(expires)) = (&mut self.file, expires) {
            // Unrecorded, the pair stays refused after a restart: the safe side.
            if let Err(e) = file.append_release(expires, sign) {
                tracing::warn!(error = %e, "cannot record a callback pair given back");
            }
        }
    }

    /// Signs remembered now.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(Reverse((expires, _))) = self.by_expiry.peek() {
            if *expires >= now_ms {
                break;
            }
            if let Some(Reverse((_, sign))) = self.by_expiry.pop() {
                if !self.live.remove(&sign) {
                    self.released.remove(&sign);
                }
            }
        }
        self.compact_file();
    }

    /// Rewrites the file with the live pairs when it is mostly expired lines. A failure
    /// only leaves the file longer.
    fn compact_file(&mut self) {
        let Some(file) = &mut self.file else { return };
        if !file.wants_compaction(self.live.len()) {
            return;
        }
        let live_signs = &self.live;
        let live = self
            .by_expiry
            .iter()
            .filter(|Reverse((_, s))| live_signs.contains(s))
            .map(|Reverse((e, s))| (*e, s.as_str()));
        if let Err(e) = file.rewrite(live) {
            tracing::warn!(error = %e, "cannot compact the callback replay record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_pair_is_admitted_once_while_it_could_verify() {
        let mut g = ReplayGuard::new(10);
        assert_eq!(g.admit(T0, "s1", T0), Ok(()));
        assert_eq!(g.admit(T0, "s1", T0 + 1), Err(ReplayRefusal::Replayed));
        // Still refused on the last millisecond its timestamp verifies.
        assert_eq!(
            g.admit(T0, "s1", T0 + MAX_SKEW_MS),
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(g.admit(T0, "s2", T0), Ok(()));
        // After that verification refuses it anyway, so it is forgotten.
        assert_eq!(
            g.admit(T0 + MAX_SKEW_MS, "s3", T0 + MAX_SKEW_MS + 1),
            Ok(())
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_future_timestamp_is_remembered_until_it_too_expires() {
        let mut g = ReplayGuard::new(10);
        let ahead = T0 + MAX_SKEW_MS;
        assert_eq!(g.admit(ahead, "f", T0), Ok(()));
        assert_eq!(
            g.admit(ahead, "f", T0 + 2 * MAX_SKEW_MS),
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(
            g.admit(T0 + 2 * MAX_SKEW_MS, "g", T0 + 2 * MAX_SKEW_MS + 1),
            Ok(())
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_released_pair_is_admitted_again_and_then_refused_once_consumed() {
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.admit(T0, "r", T0), Ok(()));
        // Held by a request in flight: a concurrent one with the same pair is refused.
        assert_eq!(g.admit(T0, "r", T0 + 1), Err(ReplayRefusal::Replayed));
        g.release("r");
        assert!(g.is_empty());
        assert_eq!(g.admit(T0, "r", T0 + 2), Ok(()));
        assert_eq!(g.admit(T0, "r", T0 + 3), Err(ReplayRefusal::Replayed));
        // Releasing and admitting again many times queues nothing new: room stays for one more.
        for i in 0..100 {
            g.release("r");
            assert_eq!(g.admit(T0, "r", T0 + 4 + i), Ok(()));
        }
        assert_eq!(g.admit(T0, "other", T0 + 200), Ok(()));
        assert_eq!(g.admit(T0, "third", T0 + 200), Err(ReplayRefusal::Full(2)));
        // A released pair still counts until it expires, then all is forgotten.
        g.release("r");
        assert_eq!(g.admit(T0, "third", T0 + 201), Err(ReplayRefusal::Full(2)));
        assert_eq!(
            g.admit(T0 + MAX_SKEW_MS, "late", T0 + MAX_SKEW_MS + 1),
            Ok(())
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g.admit(T0 + MAX_SKEW_MS, "r", T0 + MAX_SKEW_MS + 1), Ok(()));
    }

    #[test]
    fn full_of_live_pairs_refuses_instead_of_evicting() {
        let mut g = ReplayGuard::new(3);
        for s in ["a", "b", "c"] {
            assert_eq!(g.admit(T0, s, T0), Ok(()));
        }
        assert_eq!(g.admit(T0, "d", T0 + 10), Err(ReplayRefusal::Full(3)));
        // Nothing was evicted: every admitted pair is still refused.
        for s in ["a", "b", "c"] {
            assert_eq!(g.admit(T0, s, T0 + 10), Err(ReplayRefusal::Replayed));
        }
        // Room again once they expire.
        assert_eq!(g.admit(T0 + MAX_SKEW_MS, "d", T0 + MAX_SKEW_MS + 1), Ok(()));
        assert_eq!(g.len(), 1);
    }

    /// Red-team F3: with a file, an admitted pair is still refused by a new guard (a
    /// restarted daemon) until it expires.
    #[test]
    fn a_pair_recorded_in_the_file_is_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let mut g = ReplayGuard::with_file(10, &path, T0).unwrap();
        assert_eq!(g.admit(T0, "s1", T0), Ok(()));
        drop(g);
        let mut g = ReplayGuard::with_file(10, &path, T0 + 5).unwrap();
        assert_eq!(g.admit(T0, "s1", T0 + 5), Err(ReplayRefusal::Replayed));
        assert_eq!(g.admit(T0, "s2", T0 + 5), Ok(()));
        drop(g);
        let late = T0 + MAX_SKEW_MS + 1;
        let g = ReplayGuard::with_file(10, &path, late).unwrap();
        assert!(g.is_empty(), "expired pairs are not reloaded");
    }
}
