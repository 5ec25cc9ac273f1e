//! The bot against the DingTalk simulator: the channel in-process, the simulator's own
//! rejections, the official Python SDK (ignored by default), and the whole bot end to end
//! with its faults (SIGKILL, restarts, full disk).
//!
//! One test binary (one link step) for the area; each file is a module.

#[path = "../support/mod.rs"]
mod support;

mod dingtalk_channel;
mod e2e_bot;
mod e2e_reliability;
mod e2e_replicas;
mod replicas_limits;
mod sim_official_sdk;
mod sim_rejections;
