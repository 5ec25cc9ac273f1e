//! `clawdbot healthcheck` (placeholder).

use super::output::Output;
use crate::cli::HealthcheckArgs;
use crate::exit::CmdResult;
use crate::paths::Layout;

pub fn healthcheck(_layout: &Layout, _args: &HealthcheckArgs, _out: &Output) -> CmdResult {
    super::not_yet("healthcheck")
}
