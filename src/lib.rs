//! clawdbot: an operator CLI and a managed daemon that answers DingTalk chats with a
//! self-hosted, OpenAI-compatible model.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli`] and [`commands`]. Everything
//! the CLI does without a daemon is synchronous std code so the CLI starts fast; the tokio
//! runtime only exists inside the daemon (and the simulator), built after any fork.

pub mod backoff;
pub mod bot;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod daemon;
pub mod dingtalk;
pub mod docs;
pub mod exit;
pub(crate) mod fsutil;
pub mod gateway;
pub mod ipc;
pub mod listen;
pub mod logging;
pub mod model;
pub mod ops;
pub mod paths;
pub(crate) mod redact_url;
pub mod sim;
pub(crate) mod sliding_window;
pub mod status;
