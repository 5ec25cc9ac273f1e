//! The local DingTalk simulator (placeholder until the DingTalk issue lands).

use clap::Args;

use crate::exit::{CliError, CmdResult};

#[derive(Debug, Args)]
pub struct SimArgs {}

pub fn command(
    _args: &SimArgs,
    _layout: &crate::paths::Layout,
    _out: &crate::commands::output::Output,
) -> CmdResult {
    Err(CliError::failure("sim: not yet implemented"))
}
