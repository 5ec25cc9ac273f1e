//! clawdbot: an operator CLI and a managed daemon that answers DingTalk chats with a
//! self-hosted, OpenAI-compatible model.
//!
//! The binary (`src/main.rs`) is a thin shell around [`commands::main`]. Everything the CLI
//! does without a daemon is synchronous std code so the CLI starts fast; the tokio runtime
//! only exists inside the daemon (and the simulator), built after any fork.
//!
//! # Library surface
//!
//! Items are `pub(crate)` unless something outside the crate needs them. The `pub` modules
//! are what the binary, the integration tests (`tests/`), the bench (`benches/`) and the
//! test kit (`crates/testkit`) use, on purpose:
//! - [`commands::main`]: the whole program, for `src/main.rs`;
//! - [`cli::command`] and [`docs`]: the clap definition and the generated completions and
//!   units, for the test that keeps the committed man pages and completions fresh;
//! - [`config`], [`dingtalk`], [`model`], [`ipc`], [`status`], [`listen`], [`clock`]: the
//!   config loader, the DingTalk channel, the model client and the control protocol, driven
//!   and fuzzed by the tests and the bench over loopback;
//! - [`sim`]: the DingTalk simulator the tests and the bench run against;
//! - [`daemon::pidfile`]: the pid-file lock and record, which the lifecycle tests forge.
//!
//! Everything else (the bot, the model service, the daemon's runtime, logging, paths,
//! the ops endpoint, exit codes...) is crate-private: tests reach it through the binary.

pub(crate) mod backoff;
pub(crate) mod bot;
pub mod cli;
pub mod clock;
pub(crate) mod cmdline;
pub mod commands;
pub mod config;
pub(crate) mod control_chars;
pub(crate) mod conversation;
pub mod daemon;
pub mod dingtalk;
pub mod docs;
pub(crate) mod exit;
pub(crate) mod fsutil;
pub mod http_client;
pub mod ipc;
pub(crate) mod json_object;
pub(crate) mod key_counts;
pub mod listen;
pub(crate) mod logging;
pub(crate) mod message_digest;
pub mod model;
pub(crate) mod model_service;
pub(crate) mod ops;
pub(crate) mod paths;
pub(crate) mod random_hex;
pub(crate) mod redact_url;
pub mod sim;
pub(crate) mod sliding_window;
pub(crate) mod state;
pub mod status;
pub(crate) mod suggest;
