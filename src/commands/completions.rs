//! `clawdbot completions SHELL`.

use std::io::Write;

use crate::cli::CompletionsArgs;
use crate::exit::{CliError, CmdResult, Code};

pub fn print(args: &CompletionsArgs) -> CmdResult {
    std::io::stdout()
        .write_all(&crate::docs::completion(args.shell))
        .map_err(|e| CliError::failure(format!("cannot write to stdout: {e}")))?;
    Ok(Code::Ok)
}
