//! The control socket protocol between the CLI and a daemon.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON; frames over
//! [`MAX_FRAME_BYTES`] are refused before any allocation. A connection starts with
//! [`Request::Hello`] answered by [`Response::Hello`]; a peer that does not say hello
//! within [`HANDSHAKE_TIMEOUT`] is dropped. Then one request, one response, repeated.

pub mod client;
pub mod frame;
pub mod proto;

pub use proto::{Request, Response, PROTOCOL_VERSION};

use std::time::Duration;

/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// How long a new connection may take to say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
