//! Where the bot's shared state lives.
//!
//! `state.backend: local` (the default) keeps everything in this process and its state
//! folder: one daemon per bot. `state.backend: redis` puts the state that several replicas
//! of one bot must share (dedupe, inbox, turn order, memory, model limits, send rates) in
//! one Redis server under `state.redis.key_prefix`; [`redis`] holds the connection, the
//! key names and this replica's heartbeat, and the features built on it live next to
//! their local versions.
//!
//! Invariant: with the local backend nothing here opens a connection or spawns a task.

pub(crate) mod outage_log;
mod rebuilding_conn;
pub(crate) mod redis;
