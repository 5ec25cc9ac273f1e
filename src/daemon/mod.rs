//! Daemon lifecycle: how a daemon is launched, found, probed and stopped.
//!
//! "Running" means "answers hello on the control socket", never just "a pid is alive".

pub(crate) mod argv_mask;
pub(crate) mod claim;
pub(crate) mod control;
pub(crate) mod detach;
pub(crate) mod heap;
pub(crate) mod launch;
pub mod pidfile;
pub(crate) mod probe;
pub(crate) mod runtime;
pub(crate) mod sdnotify;
pub(crate) mod unit;
pub(crate) mod workload;

pub(crate) use launch::Launch;
pub(crate) use probe::{probe, Down, Probe};
