//! `clawdbot send` (placeholder).

use super::output::Output;
use crate::cli::SendArgs;
use crate::exit::CmdResult;
use crate::paths::Layout;

pub fn send(_layout: &Layout, _args: &SendArgs, _out: &Output) -> CmdResult {
    super::not_yet("send")
}
