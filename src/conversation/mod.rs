//! Per-conversation state and prompt building: memory, policy prompt, trimming, access.
//!
//! - [`memory`]: recent turns per conversation (max turns, idle reset, LRU cap);
//! - [`command`]: recognising `/new` and `/reset`;
//! - [`prompt`]: system prompt + history + message, trimmed to `prompt.max_chars`;
//! - [`access`]: who may talk to the bot and how often.

pub mod access;
pub mod command;
pub mod memory;
pub mod prompt;

pub use access::{AccessDecision, AccessGate, DenyReason};
pub use command::is_reset_command;
pub use memory::Memory;
pub use prompt::{build_prompt, Prompt};
