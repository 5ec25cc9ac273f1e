//! The file-descriptor budget: raise the soft `RLIMIT_NOFILE` to the hard limit at start,
//! and size HTTP connection caps from what is left after a reserve, so that however many
//! clients pile onto the HTTP listeners the daemon keeps descriptors for its control
//! socket, log files and outgoing calls.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept out of every HTTP connection cap: the control socket and its clients,
/// log files, the model and DingTalk HTTP clients, the runtime's own.
pub const FD_RESERVE: u64 = 96;
/// No HTTP listener serves more connections than this, however high the limit.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Nor fewer than this, however low the limit (below it the daemon cannot work anyway).
pub const MIN_HTTP_CONNECTIONS: usize = 8;

/// The current soft `RLIMIT_NOFILE` (1024 when it cannot be read).
pub fn soft_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the soft limit in force
/// afterwards; a refusal leaves the old limit, which is returned.
pub fn raise_soft_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft >= hard || setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        return soft;
    }
    hard
}

/// The connection cap of one HTTP listener given the soft descriptor limit: half of what
/// is left after [`FD_RESERVE`] (room for the outgoing calls each request may cause),
/// clamped to [`MIN_HTTP_CONNECTIONS`]..=[`MAX_HTTP_CONNECTIONS`].
pub fn http_connection_cap(soft_limit: u64) -> usize {
    let half = soft_limit.saturating_sub(FD_RESERVE) / 2;
    usize::try_from(half)
        .unwrap_or(MAX_HTTP_CONNECTIONS)
        .clamp(MIN_HTTP_CONNECTIONS, MAX_HTTP_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_the_reserve_free() {
        assert_eq!(http_connection_cap(300), 102);
        assert!(http_connection_cap(300) as u64 + FD_RESERVE < 300);
        assert_eq!(http_connection_cap(1024), 464);
        assert_eq!(http_connection_cap(1 << 20), MAX_HTTP_CONNECTIONS);
        assert_eq!(http_connection_cap(u64::MAX), MAX_HTTP_CONNECTIONS);
        assert_eq!(http_connection_cap(0), MIN_HTTP_CONNECTIONS);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = soft_limit();
        assert!(raise_soft_limit() >= before);
        assert!(soft_limit() >= before);
    }
}
