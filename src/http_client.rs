//! The settings every outbound HTTP client of the bot shares (the model client and the
//! DingTalk client), in one place so that neither can drift from the other.
//!
//! Invariants of a client built from [`builder`]:
//! - `TCP_NODELAY` on every connection: a small request or answer never waits for the
//!   previous one's delayed ACK (reqwest's default too; stated so it cannot regress);
//! - no redirect is followed: a 307/308 keeps its body, so following one would carry a
//!   prompt or a reply to whatever host it names, past the configured model URL and the
//!   session-webhook allowlist (and each request paid the redirect policy's URL parsing);
//! - at most [`IDLE_CONNECTIONS_PER_HOST`] idle connections are kept per host.

/// Idle connections kept per host once a burst is over. A burst opens as many connections
/// as it has requests in flight (a flood of replies, a model at a wide concurrency limit),
/// and each one left idle holds its buffers (~20 KiB) and a file descriptor until the
/// pool's idle timeout: after 10 000 conversations at 500 msg/s the daemon kept up to 132
/// connections to the webhook host and 33 to the model, and its RSS varied from 19.4 to
/// 31.6 MiB with them. Beyond this many, a connection is closed when its request ends and
/// the next burst opens new ones. Why 32, not fewer: at 8, a daemon kept past its knee
/// (4 000 msg/s, hundreds in flight) spent its time closing and reopening connections,
/// 0.40-0.45 CPU s per 1 000 turns against 0.33-0.36 with no bound; at 32 it is
/// 0.34-0.36, and the RSS after the 10 000 conversations 18.3-18.8 MiB.
pub(crate) const IDLE_CONNECTIONS_PER_HOST: usize = 32;

/// A client builder with the settings above; callers add their own time limits. Public
/// for the benchmark's HTTP client floor, which measures a client built by it.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
}

/// Why a body read with [`read_capped`] was not read whole.
#[derive(Debug)]
pub(crate) enum CappedBodyError {
    /// The body is longer than the limit (announced so, or found so while reading); no
    /// more than the limit was read.
    TooLarge(usize),
    /// The connection broke or timed out mid-body.
    Broken(reqwest::Error),
}

/// Reads a whole body of at most `limit` bytes. A body announced or found longer is
/// refused without reading more than `limit` bytes of it, so a server cannot make the
/// reader hold more than that. (reqwest's own `bytes()`/`text()` read without a bound.)
/// Time is the caller's to bound.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, CappedBodyError> {
    let announced = resp.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(CappedBodyError::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await.map_err(CappedBodyError::Broken)? {
        if body.len() + chunk.len() > limit {
            return Err(CappedBodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
