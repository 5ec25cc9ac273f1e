//! The model client in-process against the fake OpenAI-compatible server: quirks of real
//! runtimes, the limiter's limits and fairness, every timeout path, and (ignored by
//! default) a real llama-server.
//!
//! One test binary (one link step) for the area; each file is a module.

mod model_support;
#[path = "../support/config.rs"]
mod test_config;

mod model_client;
mod model_limits;
mod model_replicas;
mod model_timeouts;
mod real_llm;
