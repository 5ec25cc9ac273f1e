//! The reference bot (benches/reference_bot/bot.py: the official Python SDK, aiohttp and
//! an `asyncio.Semaphore`) as a child process against the same simulator and fake model.
//!
//! It needs the venv tests/python/setup.sh provisions (`target/python-venv`); without it
//! the reference column is skipped and the report says so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::stack::{Stack, CLIENT_ID, CLIENT_SECRET};

/// The reference bot's script, in the repository.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference_bot/bot.py");

/// The venv's Python, when tests/python/setup.sh has made it.
pub fn python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    let python = target.join("python-venv").join("bin").join("python");
    python.is_file().then_some(python)
}

/// A running reference bot, killed on drop.
pub struct ReferenceBot {
    child: Child,
}

impl ReferenceBot {
    /// Starts the reference bot with `python` and the concurrency `limit`, then waits for
    /// its stream connection (the bot under test must be stopped first).
    pub fn start(stack: &Stack, python: &PathBuf, limit: usize) -> Result<ReferenceBot> {
        let limit = limit.to_string();
        let child = Command::new(python)
            .arg(SCRIPT)
            .args([
                "--sim",
                stack.sim_url(),
                "--model-url",
                &stack.fake.base_url,
            ])
            .args(["--model", "local-chat", "--limit", &limit])
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} {SCRIPT}", python.display()))?;
        let bot = ReferenceBot { child };
        stack.wait_connections(true)?;
        Ok(bot)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it and waits until the simulator sees its connection gone.
    pub fn stop(mut self, stack: &Stack) -> Result<()> {
        self.kill();
        stack.wait_connections(false)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ReferenceBot {
    fn drop(&mut self) {
        self.kill();
    }
}
