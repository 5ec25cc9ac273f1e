//! Daemon lifecycle: how a daemon is launched, found, probed and stopped.
//!
//! "Running" means "answers hello on the control socket", never just "a pid is alive".

pub(crate) mod argv_mask;
pub mod claim;
pub mod control;
pub mod detach;
pub mod launch;
pub mod pidfile;
pub mod probe;
pub mod runtime;
pub mod sdnotify;
pub(crate) mod unit;
pub mod workload;

pub use launch::Launch;
pub use probe::{probe, Down, Probe};
