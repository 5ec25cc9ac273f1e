//! Runs `tests/smoke.sh` (the operator smoke test, verbatim seed commands against the
//! simulator) with the freshly built binary first on PATH, so `cargo test` covers it.

mod support;

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
    assert!(
        stderr
            .contains("ok (exit 0): clawdbot send --name dingtalk-bot --to test-group --text ping"),
        "{stderr}"
    );
}
