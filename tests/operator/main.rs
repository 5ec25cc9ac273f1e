//! The operator's side, each through the real binary: the CLI commands (config check,
//! onboard, quickstart, send, healthcheck, output), the daemon's lifecycle and control
//! socket, the supervised model process, logging, the ops endpoint, systemd units, the
//! simulator's CLI and the committed generated docs.
//!
//! One test binary (one link step) for the area; each file is a module.

#[path = "../support/mod.rs"]
mod support;

mod config_check;
mod control_socket;
mod daemon_lifecycle;
mod docs_fresh;
mod gateway_health;
mod gateway_lifecycle;
mod json_schemas;
mod log_privacy;
mod log_rotation;
mod man_pages;
mod module_graph;
mod ops_endpoint;
mod ops_healthcheck;
mod ops_onboard;
mod ops_output;
mod ops_send;
mod ops_smoke_script;
mod quickstart;
mod shell_completion;
mod sim_cli;
mod systemd;
