//! Limits shared by every listener the bot opens (the DingTalk callback server, the control
//! socket, the simulator): how long a client may take to send a request, how many
//! connections may be open at once, and how the file-descriptor budget is split so the
//! control socket always has room.
//!
//! [`http`] serves an axum router under these limits; [`slots`] is the connection cap
//! (shared with the control socket); [`nofile`] raises the soft `RLIMIT_NOFILE` and sizes
//! connection caps from it.

pub mod http;
pub mod nofile;
pub(crate) mod slots;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// Per-listener limits.
///
/// Invariant: at most `max_connections` (at least 1) are served at once. A connection
/// beyond the cap takes the slot of the oldest connection still waiting for a request
/// head, or, when every connection is busy with a request, is accepted and closed at once
/// (so it never waits in the kernel backlog holding a descriptor there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Time a client has to send a complete request head, counted from when the server
    /// starts waiting for it: right after accept, and again after every answered request
    /// on a kept-alive connection. So it is both the header-read and the idle timeout.
    pub header_timeout: Duration,
    /// Time one request may take from its head to the handler's response, body included
    /// (a trickled body is cut off here).
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Header/idle timeout of the HTTP listeners.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout of the HTTP listeners.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ListenLimits {
    /// Limits for an HTTP listener in a process whose soft `RLIMIT_NOFILE` is now what it
    /// is (see [`nofile::http_connection_cap`]).
    pub fn http_default() -> ListenLimits {
        ListenLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: nofile::http_connection_cap(nofile::soft_limit()),
        }
    }
}

impl Default for ListenLimits {
    fn default() -> Self {
        Self::http_default()
    }
}

/// A TCP address one of our servers could not listen on. `what` names the server by its
/// config key (`ops.listen`, `channel.dingtalk.http_listen`) or its name (`sim`).
#[derive(Debug, thiserror::Error)]
#[error("{what}: cannot listen on {listen}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub listen: String,
    pub source: std::io::Error,
}

/// Binds `listen` (`IP:PORT`, spaces around it ignored) for the server named `what`, and
/// returns the listener with the address it got (the port chosen for `:0`).
pub(crate) async fn bind_tcp(
    what: &'static str,
    listen: &str,
) -> Result<(TcpListener, SocketAddr), BindError> {
    let listen = listen.trim();
    let error = |source| BindError {
        what,
        listen: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(error)?;
    let addr = listener.local_addr().map_err(error)?;
    Ok((listener, addr))
}
