//! Talking to OpenAI-compatible model endpoints: the client, per-model limits with a fair
//! queue, split time budgets and fallback.
//!
//! Layout, one job per module:
//! - [`types`]: messages, turns, outcomes;
//! - [`wire`]: request bodies and response/error parsing (pure);
//! - [`sse`]: the tolerant SSE decoder (pure);
//! - [`answer_cap`]: `reply.max_answer_chars`, applied while streaming;
//! - [`budget`]: connect / first-token / idle / total deadlines;
//! - [`client`]: one endpoint over HTTP;
//! - [`endpoint_url`]: `base_url` + path, the query kept after the path;
//! - [`limiter`]: per-model concurrency with a bounded queue, fair across conversations;
//! - [`global_limit`]: the same limit shared by all replicas, as leases in Redis;
//! - [`wait_budget`]: one queue-wait bound per turn, over all its waits;
//! - [`replicas`]: one model over several runtimes: selection, per-replica limits, cooldown;
//! - [`stats`]: counters and latency percentiles;
//! - [`router`]: routing rules, fallback, the public entry point [`ModelRouter`];
//! - [`demo`]: the echo endpoint for quickstart (the simulator serves it at `/demo/v1`).

pub mod answer_cap;
pub mod budget;
pub mod client;
pub(crate) mod demo;
pub(crate) mod endpoint_url;
pub mod error;
pub(crate) mod global_limit;
pub mod limiter;
pub(crate) mod replicas;
pub mod router;
pub mod sse;
pub mod stats;
pub(crate) mod typed_chunk;
pub mod types;
pub(crate) mod wait_budget;
pub mod wire;

pub use answer_cap::ANSWER_CUT_MARK;
pub use error::{ModelError, TimeoutPhase};
pub use router::{ModelRouter, TurnHooks};
pub use types::{prompt_chars, ChatMessage, Role, Turn, TurnOutcome};
