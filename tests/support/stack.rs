//! The whole path for end-to-end tests: the real simulator (`clawdbot sim serve`, a child
//! process), an in-test fake OpenAI-compatible model server, and the real bot daemon,
//! all on 127.0.0.1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use clawdbot::sim::client::SimClient;
use clawdbot_testkit::fake_model::{FakeConfig, FakeServer};
use serde_json::{json, Value};

use super::config::{DingTalkSpec, ModelSpec, TestConfig, SEED_MODEL};
use super::{wait_until, Home};

pub const CLIENT_ID: &str = "dingstacktest";
pub const CLIENT_SECRET: &str = "stack-secret";

pub struct Stack {
    pub home: Home,
    pub rt: tokio::runtime::Runtime,
    pub sim_url: String,
    pub sim: SimClient,
    pub fake: FakeServer,
    sim_child: Child,
}

impl Stack {
    /// Starts the simulator (extra `sim serve` flags allowed) and the fake model.
    pub fn new(fake: FakeConfig, sim_flags: &[&str]) -> Stack {
        let home = Home::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fake = rt.block_on(FakeServer::start(fake)).expect("fake model");
        let port_file = home.path().join("sim.url");
        let sim_child = spawn_sim(&home, "127.0.0.1:0", &port_file, sim_flags);
        let sim_url = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .to_string();
        let sim = SimClient::new(&sim_url);
        Stack {
            home,
            rt,
            sim_url,
            sim,
            fake,
            sim_child,
        }
    }

    /// A bot config: the fake model as `local_chat` with `limit` slots and `timeout_ms`,
    /// the simulator as DingTalk, plus extra top-level YAML sections; returns its path.
    pub fn config(&self, limit: usize, timeout_ms: u64, extra: &str) -> PathBuf {
        self.write_config(&self.bot_config(limit, timeout_ms).section(extra))
    }

    /// The config [`Stack::config`] writes, to add to before writing it.
    pub fn bot_config(&self, limit: usize, timeout_ms: u64) -> TestConfig {
        self.bot_config_with(self.bot_model(timeout_ms), limit)
    }

    /// [`Stack::bot_config`] with `model` (see [`Stack::bot_model`]) as `local_chat`.
    pub fn bot_config_with(&self, model: ModelSpec, limit: usize) -> TestConfig {
        TestConfig::new()
            .model(model)
            .limit(SEED_MODEL, limit)
            .dingtalk(
                DingTalkSpec::new(CLIENT_ID, CLIENT_SECRET, &self.sim_url)
                    .target("test-group", "cidStackGroup=="),
            )
    }

    /// The fake model as `local_chat` (served as `local-chat`) with `timeout_ms`.
    pub fn bot_model(&self, timeout_ms: u64) -> ModelSpec {
        ModelSpec::new(SEED_MODEL, &self.fake.base_url)
            .served_as("local-chat")
            .api_key("${LOCAL_MODEL_API_KEY}")
            .timeout_ms(timeout_ms)
    }

    /// Writes `config` as the bot's config file; returns its path.
    pub fn write_config(&self, config: &TestConfig) -> PathBuf {
        self.home.write("bot.yaml", &config.render())
    }

    /// Starts the bot daemon and waits until its stream connection is live.
    pub fn start_bot(&self, config: &Path) {
        self.start_bot_env(config, &[]);
    }

    /// [`Stack::start_bot`] with extra environment variables for the daemon.
    pub fn start_bot_env(&self, config: &Path, env: &[(&str, &str)]) {
        let mut cmd = self.home.command(&[
            "daemon",
            "start",
            "--name",
            "bot",
            "--config",
            config.to_str().unwrap(),
        ]);
        cmd.envs(env.iter().copied());
        let r = super::Run::from(cmd.output().expect("run clawdbot"));
        assert_eq!(r.code, 0, "{r:?}");
        self.wait_connected();
    }

    pub fn wait_connected(&self) {
        let sim = self.sim.clone();
        self.rt
            .block_on(
                sim.wait_for("/_sim/connections", Duration::from_secs(15), |v| {
                    v["connections"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["live"] == true))
                }),
            )
            .expect("bot connected to the simulator");
    }

    /// Live stream connections the simulator holds (0 when it does not answer).
    pub fn live_connections(&self) -> usize {
        let v = self
            .rt
            .block_on(self.sim.get("/_sim/connections"))
            .unwrap_or(Value::Null);
        v["connections"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["live"] == true).count())
    }

    /// Injects a message; returns the simulator's answer (with `msgId`).
    pub fn inject(&self, fields: Value) -> Value {
        self.rt.block_on(self.sim.inject(&fields)).expect("inject")
    }

    pub fn inject_group(&self, conversation: &str, text: &str) -> String {
        let v = self.inject(
            json!({"text": text, "conversation_type": "group", "conversation_id": conversation,
                                   "sender_staff_id": "0423001", "sender_nick": "Li Lei"}),
        );
        v["msgId"].as_str().unwrap().to_string()
    }

    pub fn outbox(&self) -> Vec<Value> {
        self.rt.block_on(self.sim.outbox()).expect("outbox")
    }

    /// Waits until the outbox holds at least `n` entries.
    pub fn wait_outbox(&self, n: usize, timeout: Duration) -> Vec<Value> {
        self.rt
            .block_on(self.sim.wait_outbox(n, timeout))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Outbox entries for one conversation.
    pub fn replies_in(&self, conversation: &str) -> Vec<Value> {
        self.outbox()
            .into_iter()
            .filter(|e| e["conversation_id"] == conversation)
            .collect()
    }

    /// The texts of the replies into `conversation`, in the order they were sent.
    pub fn reply_texts_in(&self, conversation: &str) -> Vec<String> {
        self.replies_in(conversation)
            .iter()
            .filter_map(|e| e["text"].as_str().map(String::from))
            .collect()
    }

    pub fn status(&self) -> Value {
        self.home
            .run(&["--json", "daemon", "status", "--name", "bot"])
            .json()
    }

    /// Kills the simulator (DingTalk "goes away") and waits for the process to exit.
    pub fn kill_sim(&mut self) {
        let _ = self.sim_child.kill();
        let _ = self.sim_child.wait();
    }

    /// Waits (at most 60 s) until the daemon has nothing left to send: no message pending
    /// in its journal and no turn at the model. A message is pending until its last reply
    /// part was sent, and a restart resends only pending ones, so once this holds (and the
    /// simulator redelivers nothing by itself) every reply the daemon will ever send for
    /// the messages so far is in the outbox: the event to count duplicates after.
    pub fn wait_settled(&self) {
        let mut last = Value::Null;
        let settled = wait_until(Duration::from_secs(60), || {
            last = self.status();
            last["journal"]["pending"] == 0 && last["models"][0]["in_flight"] == 0
        });
        assert!(settled, "the daemon never settled: {last}");
    }

    pub fn fake_stats(&self) -> clawdbot_testkit::fake_model::FakeStats {
        self.fake.state.stats()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self
            .home
            .command(&["daemon", "stop", "--name", "bot", "--timeout", "3"])
            .output();
        let _ = self.sim_child.kill();
        let _ = self.sim_child.wait();
    }
}

impl Stack {
    /// Kills the simulator and starts a new one on the same port (its state is lost, as
    /// when DingTalk's gateway restarts).
    pub fn restart_sim(&mut self) {
        let _ = self.sim_child.kill();
        let _ = self.sim_child.wait();
        let listen = self.sim_url.trim_start_matches("http://").to_string();
        let port_file = self.home.path().join("sim2.url");
        self.sim_child = spawn_sim(&self.home, &listen, &port_file, &[]);
    }

    /// The bot daemon's pid.
    pub fn bot_pid(&self) -> i32 {
        self.status()["pid"].as_i64().expect("bot pid") as i32
    }
}

/// Starts `clawdbot sim serve` on `listen` and waits for its port file.
fn spawn_sim(home: &Home, listen: &str, port_file: &Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "sim",
        "serve",
        "--listen",
        listen,
        "--port-file",
        port_file.to_str().unwrap(),
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
    ];
    args.extend_from_slice(extra);
    let child = home
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sim");
    assert!(
        wait_until(Duration::from_secs(30), || port_file.exists()),
        "simulator did not start"
    );
    child
}
