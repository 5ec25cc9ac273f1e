//! `clawdbot quickstart` (placeholder).

use super::output::Output;
use crate::cli::QuickstartArgs;
use crate::exit::CmdResult;
use crate::paths::Layout;

pub fn quickstart(_layout: &Layout, _args: &QuickstartArgs, _out: &Output) -> CmdResult {
    super::not_yet("quickstart")
}
