//! The DingTalk simulator: a faithful local DingTalk (docs/dingtalk-protocol.md §9):
//! the Stream gateway, OpenAPI, session and custom-robot webhooks, AI cards, an admin API
//! under `/_sim/...`, and the demo model at `/demo/v1`. Loopback only by default. The
//! `clawdbot sim` command that drives it is `commands::sim`; its flags are `cli::sim`.

// Helpers return ready-made axum error `Response`s on the (cold) rejection path; boxing
// them would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
mod admin_token;
pub mod cards;
pub mod client;
pub mod gateway;
pub mod openapi;
pub mod reply;
pub mod server;
pub mod sign;
pub mod state;
pub mod webhooks;

pub use client::SimClient;
pub use server::SimServer;
pub use state::SimOptions;
