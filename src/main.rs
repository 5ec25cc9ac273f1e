//! The `clawdbot` binary: a plain `fn main` (no async runtime here, so `daemon start` can
//! fork safely and short commands start fast).

use clap::Parser;

fn main() {
    let cli = clawdbot::cli::Cli::parse();
    let code = clawdbot::commands::run(cli);
    std::process::exit(code as i32);
}
