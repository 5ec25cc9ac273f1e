//! `--since WHEN` of `daemon logs`.

use std::time::SystemTime;

/// Parses `--since`: a duration back from now (`10m`, `2h 30m`; humantime's syntax) or an
/// RFC 3339 time (`2026-11-30T22:00:00Z`).
pub(crate) fn parse_since(v: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(v) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{v:?} reaches back before 1970"));
    }
    humantime::parse_rfc3339_weak(v).map_err(|_| {
        format!(
            "{v:?} is neither a duration (90s, 10m, 2h, 1d) nor an RFC 3339 time \
             (2026-11-30T22:00:00Z)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_and_names_nonsense() {
        let ten_min = parse_since("10m").unwrap();
        let age = SystemTime::now().duration_since(ten_min).unwrap();
        assert!(age.as_secs() >= 600 && age.as_secs() < 3600, "{age:?}");
        assert!(parse_since("2026-11-30T22:00:00Z").is_ok());
        let e = parse_since("yesterdayish").unwrap_err();
        assert!(e.contains("yesterdayish") && e.contains("10m"), "{e}");
    }
}
