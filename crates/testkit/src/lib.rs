//! Test support for clawdbot, used by its integration tests and benchmarks only.
//!
//! This crate is a dev-dependency of `clawdbot`: nothing here is linked into the product
//! binary (tests/operator/sim_cli.rs checks that the built binary has no fake-model route).
//!
//! - [`fake_model`]: a scriptable OpenAI-compatible model server that can be slow, stall,
//!   break its stream or fail with any status, and reports what it saw.
//! - [`redis_server`]: a real `redis-server` on a loopback port in a temporary folder.

pub mod fake_model;
pub mod redis_server;
