//! Per-conversation state and prompt building: memory, policy prompt, trimming, access.
//!
//! - [`memory`]: recent turns per conversation (max turns, idle reset, LRU cap);
//! - [`command`]: recognising `/new` and `/reset`;
//! - [`prompt`]: system prompt + history + message, trimmed to `prompt.max_chars`;
//! - [`access`]: who may talk to the bot and how often.

pub(crate) mod access;
pub(crate) mod command;
pub(crate) mod memory;
pub(crate) mod prompt;
