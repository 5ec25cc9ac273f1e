//! Talking to OpenAI-compatible model endpoints: the client, per-model limits with a fair
//! queue, split time budgets and fallback.

pub mod demo;
