//! Live figures of the channel, turned into a [`ChannelReport`] on demand. Counters only:
//! no message text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::status::channel_auth::{
    OK as AUTH_OK, PENDING as AUTH_PENDING, REFUSED as AUTH_REFUSED,
};
use crate::status::channel_state::{CONNECTED, CONNECTING, LISTENING};
use crate::status::ChannelReport;

#[derive(Default)]
struct Conn {
    state: &'static str,
    connected_since_ms: Option<u64>,
    last_error: Option<String>,
    /// [`AUTH_PENDING`] until DingTalk first accepted or refused the credentials; a later
    /// success turns a refusal into [`AUTH_OK`].
    auth: &'static str,
}

pub struct Stats {
    mode: &'static str,
    conn: Mutex<Conn>,
    pub reconnects: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub send_failures: AtomicU64,
    /// Unix ms when the stream last received anything (a frame or a pong), or when it
    /// connected; 0 before the first connection. Readiness reads it.
    last_received_ms: AtomicU64,
}

impl Stats {
    pub fn new(mode: &'static str) -> Stats {
        Stats {
            mode,
            conn: Mutex::new(Conn {
                state: CONNECTING,
                auth: AUTH_PENDING,
                ..Conn::default()
            }),
            reconnects: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            last_received_ms: AtomicU64::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> R) -> R {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn set_state(&self, state: &'static str) {
        self.with(|c| {
            c.state = state;
            if state != CONNECTED && state != LISTENING {
                c.connected_since_ms = None;
            }
        });
    }

    pub fn set_connected(&self, state: &'static str, now_ms: u64) {
        self.received(now_ms);
        self.with(|c| {
            c.state = state;
            c.connected_since_ms = Some(now_ms);
        });
    }

    /// Something arrived on the stream (or it just connected) at `now_ms`.
    pub fn received(&self, now_ms: u64) {
        self.last_received_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the stream last received anything; `None` before the first connection.
    pub fn last_received_ms(&self) -> Option<u64> {
        Some(self.last_received_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    pub fn mode(&self) -> &'static str {
        self.mode
    }

    pub fn state(&self) -> &'static str {
        self.with(|c| c.state)
    }

    /// Keeps the channel's last error as `status` and `healthcheck` may show it: URL
    /// passwords masked (errors may quote `api_base`) and control characters escaped (a
    /// transport error may quote a server's words), so it is always one line.
    pub fn set_error(&self, e: impl Into<String>) {
        let e = crate::redact_url::redact_url(&e.into()).into_owned();
        let e = crate::control_chars::escape_controls(&e).into_owned();
        self.with(|c| c.last_error = Some(e));
    }

    /// [`AUTH_PENDING`], [`AUTH_OK`] or [`AUTH_REFUSED`].
    pub(crate) fn auth(&self) -> &'static str {
        self.with(|c| c.auth)
    }

    /// DingTalk accepted the credentials (stream connected, or an access token obtained).
    pub fn authenticated(&self) {
        self.with(|c| c.auth = AUTH_OK);
    }

    /// DingTalk refused the credentials: `error` (its answer, no secret) becomes the last
    /// error. Never undoes an earlier success (a token revoked later is a runtime error).
    pub fn refused(&self, error: impl Into<String>) {
        self.set_error(error);
        self.with(|c| {
            if c.auth != AUTH_OK {
                c.auth = AUTH_REFUSED;
            }
        });
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> ChannelReport {
        let (state, since, err, auth) =
            self.with(|c| (c.state, c.connected_since_ms, c.last_error.clone(), c.auth));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChannelReport {
            state: state.to_string(),
            mode: self.mode.to_string(),
            connected_since_ms: since,
            reconnects: get(&self.reconnects),
            last_error: err,
            auth: auth.to_string(),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            duplicates_dropped: get(&self.duplicates_dropped),
            send_failures: get(&self.send_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever error text comes in (a transport error may quote a server's words), the
    /// last error is one line with its URL passwords masked.
    #[test]
    fn the_last_error_is_one_masked_line() {
        let stats = Stats::new("stream");
        stats.set_error("cannot reach http://u:pw@127.0.0.1:9/: reset\n2026 INFO forged \u{1b}[2J");
        let shown = stats.report().last_error.expect("an error");
        assert!(!shown.contains(char::is_control), "{shown:?}");
        assert!(!shown.contains("pw@"), "{shown}");
        assert!(
            shown.contains("reset\\n2026 INFO forged \\u{1b}[2J"),
            "{shown}"
        );
    }
}
