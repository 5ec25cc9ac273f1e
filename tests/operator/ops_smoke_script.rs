//! Runs `tests/smoke.sh` (the operator smoke test, verbatim seed commands against the
//! simulator) with the freshly built binary first on PATH, so `cargo test` covers it; and
//! `tests/container.sh` (the container image, built and run with podman), which needs
//! podman and a base image and is run by `.ci/run`.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::wait_until;

#[test]
fn the_operator_smoke_script_passes() {
    let bin = Path::new(env!("CARGO_BIN_EXE_clawdbot"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let (out, err) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg("tests/smoke.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .env_remove("CLAWDBOT")
        .env_remove("CLAWDBOT_HOME")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run bash");
    let mut status = None;
    let finished = wait_until(Duration::from_secs(120), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !finished {
        // SIGTERM lets the script's trap stop the daemon and the simulator.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        finished,
        "smoke.sh did not finish in 120 s\n{stdout}\n{stderr}"
    );
    assert_eq!(
        status.unwrap().code(),
        Some(0),
        "smoke.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stderr.contains("smoke: PASS"), "{stderr}");
    // The trap cleaned up: no process of this run is left and its home is gone.
    let home = stderr
        .lines()
        .find_map(|l| l.strip_prefix("smoke: home "))
        .expect("the script names its home")
        .to_string();
    assert!(
        wait_until(Duration::from_secs(10), || processes_mentioning(&home)
            .is_empty()),
        "left running: {:?}",
        processes_mentioning(&home)
    );
    assert!(!Path::new(&home).exists(), "{home} was not removed");
    assert!(
        stderr
            .contains("ok (exit 0): clawdbot send --name dingtalk-bot --to test-group --text ping"),
        "{stderr}"
    );
}

/// The exit code `tests/container.sh` uses for "cannot run here".
const CONTAINER_SKIPPED: i32 = 77;

#[test]
#[ignore = "needs podman: run by .ci/run"]
fn the_container_image_builds_runs_as_non_root_and_answers() {
    let out_dir = tempfile::tempdir().unwrap();
    let (out, err) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg("tests/container.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CLAWDBOT_BIN", env!("CARGO_BIN_EXE_clawdbot"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run bash");
    let mut status = None;
    let finished = wait_until(Duration::from_secs(300), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !finished {
        // SIGTERM lets the script's trap remove the container, image and simulator.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(finished, "container.sh did not finish in 300 s\n{stderr}");
    let code = status.unwrap().code();
    // Asked for explicitly (--ignored), a skip is a failure: nothing was shown.
    assert_ne!(
        code,
        Some(CONTAINER_SKIPPED),
        "container.sh could not run here\n{stderr}"
    );
    assert_eq!(code, Some(0), "container.sh failed\n{stderr}");
    assert!(stderr.contains("container: PASS"), "{stderr}");
    assert!(stderr.contains("container: a reply arrived"), "{stderr}");
}

/// Live (non-zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = e.path();
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(dir.join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && cmd.contains(needle) {
            found.push(cmd);
        }
    }
    found
}
