//! The output contract of the real binary: printing never panics (exit 101). A closed
//! pipe ends the output quietly with the command's own exit code; any other stdout write
//! error (a full disk: `/dev/full`) exits 1 and says so on stderr; a failing stderr is
//! ignored. `--json` prints exactly one JSON document on stdout, also for clap's usage
//! errors and `--version`.

use crate::support;

use std::fs::File;
use std::process::Stdio;

use support::{Home, Run};

/// A write end whose read end is already closed: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

fn dev_full() -> Stdio {
    Stdio::from(
        File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full"),
    )
}

/// Runs with stdout (and, when given, stderr) redirected; captures what is not.
fn run_to(home: &Home, args: &[&str], stdout: Stdio, stderr: Option<Stdio>) -> Run {
    let mut cmd = home.command(args);
    cmd.stdout(stdout);
    match stderr {
        Some(s) => cmd.stderr(s),
        None => cmd.stderr(Stdio::piped()),
    };
    let out = cmd.output().expect("run clawdbot");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A home with a log for daemon `bot`, so `daemon logs` has lines to print.
fn home_with_a_log() -> Home {
    let home = Home::new();
    std::fs::create_dir_all(home.path().join("logs")).unwrap();
    let lines: String = (0..200).map(|i| format!("log line {i}\n")).collect();
    std::fs::write(home.log_path("bot"), lines).unwrap();
    home
}

/// (arguments, exit code of the command itself)
const COMMANDS: &[(&[&str], i32)] = &[
    (&["--json", "daemon", "status"], 3),
    (&["daemon", "status", "--name", "bot"], 3),
    (&["--json", "daemon", "status", "--name", "bot"], 3),
    (&["daemon", "logs", "--name", "bot"], 0),
    (&["completions", "bash"], 0),
    (&["--help"], 0),
    (&["--json", "--version"], 0),
    (&["--json", "daemon", "start", "--bogus"], 2),
    (&["--json", "daemon", "stop", "--name", "bad/name"], 2),
];

fn assert_no_panic(r: &Run, args: &[&str]) {
    assert_ne!(r.code, 101, "{args:?} panicked: {r:?}");
    assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
}

#[test]
fn a_closed_pipe_ends_output_quietly_with_the_commands_own_exit_code() {
    let home = home_with_a_log();
    for (args, code) in COMMANDS {
        let r = run_to(&home, args, closed_pipe(), None);
        assert_no_panic(&r, args);
        assert_eq!(r.code, *code, "{args:?}: {r:?}");
        assert!(
            !r.stderr.contains("cannot write to stdout"),
            "EPIPE must stay quiet: {args:?}: {r:?}"
        );
    }
}

#[test]
fn a_full_stdout_exits_1_and_says_so_on_stderr() {
    let home = home_with_a_log();
    for (args, _) in COMMANDS {
        let r = run_to(&home, args, dev_full(), None);
        assert_no_panic(&r, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("cannot write to stdout") && r.stderr.contains("space"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn a_full_stderr_is_ignored_and_never_panics() {
    let home = home_with_a_log();
    for (args, code) in COMMANDS {
        let r = run_to(&home, args, Stdio::null(), Some(dev_full()));
        assert_no_panic(&r, args);
        assert_eq!(r.code, *code, "{args:?}: {r:?}");
        let r = run_to(&home, args, dev_full(), Some(dev_full()));
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
    }
}

#[test]
fn json_usage_errors_print_one_error_document_and_the_human_message() {
    let home = Home::new();
    let r = home.run(&["--json", "daemon", "start", "--bogus"]);
    assert_eq!(r.code, 2, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["schema_version"], 2);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["error"]["kind"], "usage", "{doc}");
    assert!(support::error_message(&doc).contains("--bogus"), "{doc}");
    assert!(
        r.stderr.contains("--bogus") && r.stderr.contains("Usage:"),
        "{r:?}"
    );

    // The flag may come after the subcommand; a missing subcommand is a usage error too.
    let r = home.run(&["daemon", "start", "--name", "x", "--timeout", "0", "--json"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        support::error_message(&r.json()).contains("--timeout"),
        "{r:?}"
    );
    let r = home.run(&["--json", "daemon"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.json()["exit_code"], 2);
    assert!(
        support::error_message(&r.json())
            .starts_with("a subcommand is missing: one of start, run, stop"),
        "{r:?}"
    );

    // Without --json stdout stays empty.
    let r = home.run(&["daemon", "start", "--bogus"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
}

#[test]
fn json_version_is_a_json_document() {
    let home = Home::new();
    let r = home.run(&["--json", "--version"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["schema_version"], 2);
    assert_eq!((&doc["ok"], &doc["exit_code"]), (&true.into(), &0.into()));
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let plain = home.run(&["--version"]);
    assert_eq!(
        plain.stdout.trim(),
        format!("clawdbot {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_home_that_is_a_regular_file_is_a_usage_error_naming_it() {
    let home = Home::new();
    let file = home.write("not-a-folder", "x");
    let file = file.to_str().unwrap();
    for args in [
        &["daemon", "status"][..],
        &["daemon", "status", "--name", "bot"],
        &["daemon", "stop", "--name", "bot"],
    ] {
        let out = std::process::Command::new(support::BIN)
            .arg("--home")
            .arg(file)
            .args(args)
            .env_remove("CLAWDBOT_HOME")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(file) && stderr.contains("--home"),
            "{stderr}"
        );
    }
    let out = std::process::Command::new(support::BIN)
        .args(["--json", "daemon", "status"])
        .env("CLAWDBOT_HOME", file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(support::error_message(&doc).contains(file), "{doc}");
}
