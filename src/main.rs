//! The `clawdbot` binary: a plain `fn main` (no async runtime here, so `daemon start` can
//! fork safely and short commands start fast).

fn main() {
    let code = clawdbot::commands::main(std::env::args_os().collect());
    std::process::exit(code as i32);
}
