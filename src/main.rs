//! The `clawdbot` binary: a plain `fn main` (no async runtime here, so `daemon start` can
//! fork safely and short commands start fast).

fn main() -> std::process::ExitCode {
    clawdbot::commands::main(std::env::args_os().collect())
}
