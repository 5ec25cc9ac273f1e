//! Shared fixture for integration tests: a temporary `--home`, the real binary, and
//! polling helpers (no fixed sleeps). Every daemon started under a [`Home`] is stopped
//! when it is dropped.
#![allow(dead_code)]

pub mod config;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_clawdbot");

/// The seed config from the product brief, pointing at `base_url` (see
/// [`config::TestConfig::seed`]).
pub fn seed_config(base_url: &str) -> String {
    config::TestConfig::seed(base_url).render()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A fresh home under /tmp (short paths: unix socket paths are limited to 107 bytes).
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("cb")
            .tempdir_in("/tmp")
            .expect("temp home");
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command for the real binary with `--home` set and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--home").arg(self.path()).args(args);
        c.env_remove("CLAWDBOT_HOME")
            .env("NO_COLOR", "1")
            .env("LOCAL_MODEL_API_KEY", "test-key");
        c.stdin(Stdio::null());
        c
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run clawdbot"))
    }

    /// Writes a file under the home and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// The socket folder of daemon `name` (its `control.sock`).
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.path().join("run").join(name)
    }

    /// The state folder of daemon `name` (its `pid`, `start.lock`, `launch.json`).
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.path().join("state").join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.path().join("logs").join(format!("{name}.log"))
    }

    /// `daemon start --name name --config config` (no wait beyond the command's own).
    pub fn start_daemon(&self, name: &str, config: &Path) -> Run {
        self.run(&[
            "daemon",
            "start",
            "--name",
            name,
            "--config",
            config.to_str().unwrap(),
        ])
    }

    /// The log of daemon `name` once one of its lines satisfies `found`, waited for up to
    /// 30 s (only a hang reaches that): the daemon's logging thread writes a batch at a
    /// time, so a record logged a moment ago may not be in the file yet.
    pub fn log_once(&self, name: &str, found: impl Fn(&str) -> bool) -> String {
        let path = self.log_path(name);
        let mut text = String::new();
        let seen = wait_until(Duration::from_secs(30), || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            text.lines().any(&found)
        });
        assert!(seen, "no such line in {}:\n{text}", path.display());
        text
    }

    /// Every log file under the home, concatenated (for privacy assertions).
    pub fn all_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.path().join("logs")) {
            for e in entries.flatten() {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.path().join("state")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let _ = self
                    .command(&["daemon", "stop", "--name", &name, "--timeout", "3"])
                    .output();
            }
        }
    }
}

/// The command a CLI message printed after `marker` (to the end of that line), run as a
/// shell would split it (plain words: homes live under /tmp), from this test's folder and
/// with the environment of [`Home::command`]. Proves the hint names the binary and home.
pub fn run_hint(message: &str, marker: &str) -> Run {
    let line = message
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no {marker:?} in {message}"));
    let mut words = line.split_whitespace();
    let program = words.next().expect("a program");
    let out = Command::new(program)
        .args(words)
        .env_remove("CLAWDBOT_HOME")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run hint {line:?}: {e}"));
    Run::from(out)
}

/// Fails (never passes silently) unless the test runs as root. For tests marked
/// `#[ignore = "needs root ..."]`: plain `cargo test` lists them as ignored, and `.ci/run`
/// (root on a fresh machine) runs them with `--ignored`.
pub fn require_root(to: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to {to}: run it as root (.ci/run does)"
    );
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on right now (the OS picked it, then it was released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// An OpenAI-style base URL on loopback where nothing listens (connection refused).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}/v1", free_port())
}

/// The `error.message` of a `--json` failure document ("" when it has none).
pub fn error_message(doc: &serde_json::Value) -> &str {
    doc["error"]["message"].as_str().unwrap_or_default()
}

/// The `error.fix` of a `--json` failure document ("" when it has none).
pub fn error_fix(doc: &serde_json::Value) -> &str {
    doc["error"]["fix"].as_str().unwrap_or_default()
}

/// The check called `name` in a healthcheck or onboard `--json` document.
pub fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name:?} in {doc}"))
}

/// A small tmpfs mounted on a folder for the life of the value (a disk that can fill up).
/// Needs root (this suite runs as root); unmounted (lazily) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (this suite runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Writes a filler file until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 4096];
        for _ in 0..1_000_000 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The base URL of a loopback server that accepts connections and never answers (a model
/// or DingTalk that hangs). It holds up to 64 connections for the rest of the test run.
pub fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(64).collect();
        // Keep them open (never answered) until the test binary exits.
        loop {
            std::thread::park();
            let _ = &held;
        }
    });
    format!("http://{addr}")
}

/// Reads `child`'s stderr line by line until a line satisfies `wanted` (returned) or
/// `limit` passes (`None`); the lines read so far are appended to `seen`.
pub fn wait_stderr_line(
    child: &mut std::process::Child,
    limit: Duration,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if wanted(&line) {
            return Some(line);
        }
    }
}

/// Appends everything read from a pseudo-terminal's master side to the returned screen,
/// on a thread of its own (it ends with EIO once the child closed the terminal).
pub fn record_screen(master: &std::fs::File) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::Read;
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (shared, mut reader) = (screen.clone(), master.try_clone().expect("dup the pty"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            shared
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    screen
}
