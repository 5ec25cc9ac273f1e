//! `clawdbot completions SHELL`.

use crate::cli::CompletionsArgs;
use crate::exit::{CmdResult, Code};

/// Prints the script; a stdout failure is settled by [`super::output::settle`].
pub(crate) fn print(args: &CompletionsArgs) -> CmdResult {
    super::output::write_stdout(&crate::docs::completion(args.shell));
    Ok(Code::Ok)
}
