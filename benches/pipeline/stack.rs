//! The system under measurement, all on 127.0.0.1: the real simulator (`clawdbot sim
//! serve`, a child process), the in-process fake model ([`FakeServer`]) and the real bot
//! daemon (`clawdbot daemon start` under a temporary `--home`).
//!
//! Every wait here is bounded; the simulator child and the daemon are stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clawdbot::sim::client::SimClient;
use clawdbot_testkit::fake_model::{FakeConfig, FakeServer};
use serde_json::Value;

/// The binary under measurement (built in the bench profile by `cargo bench`).
pub const BIN: &str = env!("CARGO_BIN_EXE_clawdbot");
/// The daemon's name under the temporary home.
pub const BOT: &str = "bot";
/// Reply text for a turn refused by the model queue (recognised in the outbox).
pub const BUSY_TEXT: &str = "BENCH-BUSY";
/// Reply text for a turn whose model call failed or timed out.
pub const FALLBACK_TEXT: &str = "BENCH-FALLBACK";

pub const CLIENT_ID: &str = "dingbench";
pub const CLIENT_SECRET: &str = "bench-secret";
const SIM_START: Duration = Duration::from_secs(15);
const CONNECT_WAIT: Duration = Duration::from_secs(15);

/// The bot's model limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct BotLimits {
    /// `limits.max_concurrency_per_model`.
    pub concurrency: usize,
    /// `limits.queue.max_waiting`.
    pub max_waiting: usize,
}

/// What one `daemon start` cost.
#[derive(Debug, Clone, Copy)]
pub struct StartFigures {
    /// Wall time of the `daemon start` command, in milliseconds.
    pub wall_ms: f64,
    /// The `ready_ms` the command reported.
    pub ready_ms: f64,
}

/// Simulator + fake model + (when started) bot daemon.
pub struct Stack {
    home: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub sim: SimClient,
    sim_url: String,
    pub fake: FakeServer,
    sim_child: Child,
    /// A loopback port free when the stack started, for the bot's ops endpoint.
    ops_port: u16,
}

impl Stack {
    /// The simulator's process id (for its CPU time).
    pub fn sim_pid(&self) -> u32 {
        self.sim_child.id()
    }

    /// Starts the fake model with `fake` and the simulator; waits for the simulator's URL.
    /// The home is a fresh folder under /tmp.
    pub fn start(fake: FakeConfig) -> Result<Stack> {
        Stack::start_in(fake, Path::new("/tmp"))
    }

    /// [`Stack::start`] with the home a fresh folder under `parent` (a short path: unix
    /// socket paths are limited to 107 bytes).
    pub fn start_in(fake: FakeConfig, parent: &Path) -> Result<Stack> {
        let home = tempfile::Builder::new()
            .prefix("cbbench")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary home under {}", parent.display()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        let fake = rt
            .block_on(FakeServer::start(fake))
            .context("starting the fake model")?;
        let port_file = home.path().join("sim.url");
        let sim_child = spawn_sim(home.path(), &port_file)?;
        let sim_url = read_port_file(&port_file, SIM_START)?;
        let sim = SimClient::new(&sim_url);
        let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for the bot's ops endpoint")?
            .port();
        Ok(Stack {
            home,
            rt,
            sim,
            sim_url,
            fake,
            sim_child,
            ops_port,
        })
    }

    /// The temporary home (the daemon's journal is under it).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The simulator's base URL.
    pub fn sim_url(&self) -> &str {
        &self.sim_url
    }

    /// The binary with `--home` set, a clean environment, and no stdin.
    pub fn command(&self, args: &[&str]) -> Command {
        clawdbot_command(self.home.path(), args)
    }

    /// Runs the binary to completion; fails when it cannot be spawned.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("running clawdbot {}", args.join(" ")))
    }

    /// Writes the bot config for `limits` and returns its path. The bot serves its ops
    /// endpoint at [`Stack::metrics_url`] (the in-daemon figures, see `inside.rs`); a
    /// config of [`Stack::write_config_as`] does not, as several daemons may run it.
    pub fn write_config(&self, limits: BotLimits) -> Result<PathBuf> {
        let ops = format!("ops:\n  listen: \"127.0.0.1:{}\"\n", self.ops_port);
        self.write_config_as("bot.yaml", limits, &ops)
    }

    /// The `/metrics` URL of a bot started with [`Stack::write_config`]'s config.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.ops_port)
    }

    /// Writes the bot config for `limits` plus the YAML section `extra` (e.g. `state:`)
    /// as `file` in the home, and returns its path.
    pub fn write_config_as(&self, file: &str, limits: BotLimits, extra: &str) -> Result<PathBuf> {
        let path = self.home.path().join(file);
        let mut text = self.config_text(limits);
        text.push_str(extra);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `daemon start --name name` with `config` (no wait for its connection).
    pub fn start_named(&self, name: &str, config: &Path) -> Result<()> {
        let config = config.to_string_lossy();
        let out = self.run(&[
            "--json", "daemon", "start", "--name", name, "--config", &config,
        ])?;
        json_stdout(&out, "daemon start").map(|_| ())
    }

    /// `daemon stop --name name` (errors ignored: used on the way out).
    pub fn stop_named(&self, name: &str) {
        let _ = self.run(&["daemon", "stop", "--name", name, "--timeout", "10"]);
    }

    /// Waits until the simulator has exactly `n` live bot connections.
    pub fn wait_live_connections(&self, n: usize) -> Result<()> {
        let pred = move |v: &Value| {
            v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().filter(|c| c["live"] == true).count() == n)
        };
        self.rt
            .block_on(self.sim.wait_for("/_sim/connections", CONNECT_WAIT, pred))
            .map(|_| ())
            .map_err(|e| anyhow!("waiting for {n} live bot connections: {e}"))
    }

    /// The fake model as `local_chat` with generous time budgets (nothing should time out
    /// in a benchmark), the simulator as DingTalk, no per-user rate limit, the send rate
    /// raised to its maximum (the benchmark measures the bot's overhead, not DingTalk's
    /// 20 messages per second), and reply texts the outbox classification recognises.
    fn config_text(&self, limits: BotLimits) -> String {
        use crate::test_config::{DingTalkSpec, ModelSpec, TestConfig, SEED_MODEL};
        TestConfig::new()
            .model(
                ModelSpec::new(SEED_MODEL, &self.fake.base_url)
                    .served_as("local-chat")
                    .api_key("${LOCAL_MODEL_API_KEY}")
                    .timeout_ms(60_000),
            )
            .limit(SEED_MODEL, limits.concurrency)
            .queue(limits.max_waiting, 60_000)
            .dingtalk(
                DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &self.sim_url)
                    .with("send_rate:\n  per_robot: 10000\n  per_conversation: 10000"),
            )
            .section(&format!(
                "reply:\n  busy_text: \"{BUSY_TEXT}\"\n  fallback_text: \"{FALLBACK_TEXT}\"\n"
            ))
            .section("access:\n  user_rate_limit: 0\n")
            .render()
    }

    /// `daemon start` with `config`, then waits for its stream connection to the simulator.
    pub fn start_bot(&self, config: &Path) -> Result<StartFigures> {
        let config = config.to_string_lossy();
        let began = Instant::now();
        let out = self.run(&[
            "--json", "daemon", "start", "--name", BOT, "--config", &config,
        ])?;
        let wall_ms = ms(began.elapsed());
        let doc = json_stdout(&out, "daemon start")?;
        let ready_ms = doc["ready_ms"]
            .as_f64()
            .ok_or_else(|| anyhow!("daemon start reported no ready_ms: {doc}"))?;
        self.wait_connections(true)?;
        Ok(StartFigures { wall_ms, ready_ms })
    }

    /// `daemon stop`, then waits until the simulator sees no live connection.
    pub fn stop_bot(&self) -> Result<()> {
        let out = self.run(&["daemon", "stop", "--name", BOT, "--timeout", "10"])?;
        if !out.status.success() {
            bail!(
                "daemon stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.wait_connections(false)
    }

    /// Waits until the simulator has (`live`) or has no (`!live`) live bot connection.
    pub fn wait_connections(&self, live: bool) -> Result<()> {
        let pred = move |v: &Value| {
            let any_live = v["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["live"] == true));
            any_live == live
        };
        self.rt
            .block_on(self.sim.wait_for("/_sim/connections", CONNECT_WAIT, pred))
            .map(|_| ())
            .map_err(|e| anyhow!("bot connection (live = {live}): {e}"))
    }

    /// The daemon's status report (`daemon status --json`).
    pub fn bot_status(&self) -> Result<Value> {
        let out = self.run(&["--json", "daemon", "status", "--name", BOT])?;
        json_stdout(&out, "daemon status")
    }

    /// The daemon's pid, from its status report.
    pub fn bot_pid(&self) -> Result<u32> {
        let doc = self.bot_status()?;
        doc["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| anyhow!("daemon status reported no pid: {doc}"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self
            .command(&["daemon", "stop", "--name", BOT, "--timeout", "5"])
            .output();
        let _ = self.sim_child.kill();
        let _ = self.sim_child.wait();
    }
}

/// The binary with `--home home`, `NO_COLOR`, the model key set, and no stdin.
pub fn clawdbot_command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--home").arg(home).args(args);
    c.env_remove("CLAWDBOT_HOME")
        .env("NO_COLOR", "1")
        .env("LOCAL_MODEL_API_KEY", "bench-key")
        .stdin(Stdio::null());
    c
}

/// Starts `clawdbot sim serve` on an ephemeral loopback port.
fn spawn_sim(home: &Path, port_file: &Path) -> Result<Child> {
    let port_file = port_file.to_string_lossy();
    let args = [
        "sim",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--port-file",
        &port_file,
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
    ];
    // The simulator's log stays in the home (removed with it) unless the run fails early.
    let log = std::fs::File::create(home.join("sim.log")).context("creating sim.log")?;
    clawdbot_command(home, &args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning clawdbot sim serve")
}

/// Polls for the simulator's port file (written once it listens) for at most `timeout`.
fn read_port_file(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let url = text.trim();
            if !url.is_empty() {
                return Ok(url.to_string());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the simulator did not write {} within {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses a successful command's stdout as JSON, or explains why it cannot.
fn json_stdout(out: &Output, what: &str) -> Result<Value> {
    if !out.status.success() {
        bail!(
            "{what} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{what} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A duration in (fractional) milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
