//! `clawdbot onboard` (placeholder).

use super::output::Output;
use crate::cli::OnboardArgs;
use crate::exit::CmdResult;
use crate::paths::Layout;

pub fn onboard(_layout: &Layout, _args: &OnboardArgs, _out: &Output) -> CmdResult {
    super::not_yet("onboard")
}
