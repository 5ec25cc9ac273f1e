//! Runs the official-SDK conformance script (tests/python/run_official_sdk_test.sh) when
//! its venv exists (created by tests/python/setup.sh, which `.ci/run` calls first). Without
//! the venv it is skipped, unless CLAWDBOT_REQUIRE_PY_SDK=1 makes the absence a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn official_python_sdk_talks_to_the_sim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| root.join("target").display().to_string());
    let venv_python = Path::new(&target).join("python-venv/bin/python");
    if !venv_python.exists() {
        assert!(
            std::env::var("CLAWDBOT_REQUIRE_PY_SDK").as_deref() != Ok("1"),
            "no venv at {}: run tests/python/setup.sh",
            venv_python.display()
        );
        eprintln!(
            "skipped: no venv at {} (run tests/python/setup.sh)",
            venv_python.display()
        );
        return;
    }
    let out = Command::new("bash")
        .arg(root.join("tests/python/run_official_sdk_test.sh"))
        .env("CLAWDBOT_BIN", env!("CARGO_BIN_EXE_clawdbot"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run the conformance script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("official SDK conformance: OK"),
        "official SDK conformance failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
