//! "Did you mean": the known word closest to a mistyped one.
//!
//! Uses `strsim` (maintained, already in the tree through clap) rather than hand-written
//! distances. Two measures, since neither fits every length: Jaro-Winkler favours long
//! words with a shared start (`timeuot` for `timeout_ms`); a Damerau-Levenshtein distance
//! of one edit (a swap counts as one) catches short names (`bto` for `bot`), where
//! Jaro-Winkler's matching window is too small.

/// How alike (Jaro-Winkler, 0..=1) a known word must be to count as close.
const SIMILAR_ENOUGH: f64 = 0.8;

/// The candidate closest to `word`, when one is close enough; never `word` itself.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (score(word, c), c))
        .filter(|(s, _)| *s >= SIMILAR_ENOUGH)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Jaro-Winkler, raised to [`SIMILAR_ENOUGH`] for a one-edit difference in a word of three
/// letters or more (one edit turns any short word into any other).
fn score(a: &str, b: &str) -> f64 {
    let jw = strsim::jaro_winkler(a, b);
    if a.chars().count() >= 3 && strsim::damerau_levenshtein(a, b) <= 1 {
        jw.max(SIMILAR_ENOUGH)
    } else {
        jw
    }
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn close_words_only() {
        assert_eq!(closest("bto", ["bot", "sim"]), Some("bot"));
        assert_eq!(
            closest("timeuot", ["kind", "timeout_ms"]),
            Some("timeout_ms")
        );
        assert_eq!(closest("colour", ["kind", "base_url"]), None);
        assert_eq!(closest("bot", ["bot"]), None);
        assert_eq!(closest("x", ["y"]), None, "too short to guess");
    }
}
