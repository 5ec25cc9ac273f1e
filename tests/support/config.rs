//! One typed builder for the YAML configs that tests and benches hand to the daemon or to
//! `clawdbot::config::parse`, rendered in one place instead of a template per file.
//!
//! The layout is fixed (the order below, two-space indents, strings in double quotes), so
//! a test that edits the text on purpose (a bad value, a missing variable) can still find
//! the line it edits. Used by `tests/support` (seed and stack configs), the `model` test
//! binary, `fuzz_parsers` (its seed) and `benches/pipeline` (each includes this file).
#![allow(dead_code)]

use std::fmt::Write as _;

/// The model name of the seed config from the product brief.
pub const SEED_MODEL: &str = "local_chat";

/// One `models:` entry.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    name: String,
    base_url: String,
    /// The model name sent to the server (`model:`); the entry's name unless set.
    served_as: String,
    /// `api_key:` as written, e.g. `${LOCAL_MODEL_API_KEY}` (expanded by the loader).
    api_key: Option<String>,
    /// Further keys of the entry, one `key: value` per item, in order.
    keys: Vec<String>,
    /// `replicas:` (base_url, max_concurrency) written instead of `base_url` when not empty.
    replicas: Vec<(String, Option<usize>)>,
}

impl ModelSpec {
    /// An `openai_compatible` model `name` at `base_url`, served under its own name.
    pub fn new(name: &str, base_url: &str) -> ModelSpec {
        ModelSpec {
            name: name.to_string(),
            base_url: base_url.to_string(),
            served_as: name.to_string(),
            api_key: None,
            keys: Vec::new(),
            replicas: Vec::new(),
        }
    }

    /// Serves the model from these runtimes (`replicas:` with their own
    /// `max_concurrency`) instead of the one `base_url`.
    pub fn replicas(mut self, replicas: &[(&str, Option<usize>)]) -> ModelSpec {
        self.replicas = replicas
            .iter()
            .map(|(url, n)| (url.to_string(), *n))
            .collect();
        self
    }

    /// The model name the server is asked for.
    pub fn served_as(mut self, model: &str) -> ModelSpec {
        self.served_as = model.to_string();
        self
    }

    /// `api_key:` exactly as written (an `${ENV}` reference in the tests).
    pub fn api_key(mut self, expression: &str) -> ModelSpec {
        self.api_key = Some(expression.to_string());
        self
    }

    pub fn timeout_ms(self, ms: u64) -> ModelSpec {
        self.key(&format!("timeout_ms: {ms}"))
    }

    /// One more `key: value` line of the entry.
    pub fn key(mut self, line: &str) -> ModelSpec {
        self.keys.push(line.trim().to_string());
        self
    }

    /// More `key: value` lines, one per line of `lines` (blank lines ignored).
    pub fn keys(self, lines: &str) -> ModelSpec {
        lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .fold(self, |m, l| m.key(l))
    }

    fn render(&self, out: &mut String) {
        let _ = write!(out, "  {}:\n    kind: openai_compatible\n", self.name);
        if self.replicas.is_empty() {
            let _ = writeln!(out, "    base_url: \"{}\"", self.base_url);
        } else {
            let _ = writeln!(out, "    replicas:");
            for (url, limit) in &self.replicas {
                let _ = writeln!(out, "      - base_url: \"{url}\"");
                if let Some(n) = limit {
                    let _ = writeln!(out, "        max_concurrency: {n}");
                }
            }
        }
        if let Some(key) = &self.api_key {
            let _ = writeln!(out, "    api_key: {key}");
        }
        let _ = writeln!(out, "    model: \"{}\"", self.served_as);
        for line in &self.keys {
            let _ = writeln!(out, "    {line}");
        }
    }
}

/// `channel.dingtalk` pointing at a simulator (or any base URL).
#[derive(Clone, Debug)]
pub struct DingTalkSpec {
    client_id: String,
    client_secret: String,
    api_base: String,
    /// Further keys of `channel.dingtalk` (indented text), before `targets`.
    extra: String,
    targets: Vec<(String, String)>,
}

impl DingTalkSpec {
    pub fn new(client_id: &str, client_secret: &str, api_base: &str) -> DingTalkSpec {
        DingTalkSpec {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            api_base: api_base.to_string(),
            extra: String::new(),
            targets: Vec::new(),
        }
    }

    /// A named `targets:` entry (a group conversation `send` can name).
    pub fn target(mut self, name: &str, conversation: &str) -> DingTalkSpec {
        self.targets
            .push((name.to_string(), conversation.to_string()));
        self
    }

    /// Further keys of `channel.dingtalk`, as YAML relative to it (indented here).
    pub fn with(mut self, yaml: &str) -> DingTalkSpec {
        for line in yaml.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(self.extra, "    {line}");
        }
        self
    }

    fn render(&self, out: &mut String) {
        let _ = write!(
            out,
            "channel:\n  dingtalk:\n    client_id: \"{}\"\n    client_secret: \"{}\"\n    api_base: \"{}\"\n{}",
            self.client_id, self.client_secret, self.api_base, self.extra
        );
        if !self.targets.is_empty() {
            out.push_str("    targets:\n");
            for (name, conversation) in &self.targets {
                let _ = writeln!(out, "      {name}: \"{conversation}\"");
            }
        }
    }
}

/// A whole config: models (the first is the default route unless set), routing rules,
/// per-model limits, the queue, the DingTalk channel, and further top-level sections.
#[derive(Clone, Debug, Default)]
pub struct TestConfig {
    models: Vec<ModelSpec>,
    default_model: Option<String>,
    /// `routing.rules`: (`conversation_id` or `conversation_type`, value, model).
    rules: Vec<(String, String, String)>,
    limits: Vec<(String, usize)>,
    /// Whether `max_concurrency_per_model` is written even when empty (`{}`).
    explicit_limits: bool,
    /// `limits.queue`: `max_waiting` and `max_wait_ms`, each only when set.
    queue: (Option<usize>, Option<u64>),
    dingtalk: Option<DingTalkSpec>,
    /// Further top-level sections, as written, in order.
    sections: Vec<String>,
}

impl TestConfig {
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// The seed config from the product brief: `local_chat` at `base_url` (API key from
    /// `LOCAL_MODEL_API_KEY`, 12 s budget), 4 concurrent turns.
    pub fn seed(base_url: &str) -> TestConfig {
        TestConfig::new()
            .model(
                ModelSpec::new(SEED_MODEL, base_url)
                    .served_as("local-chat")
                    .api_key("${LOCAL_MODEL_API_KEY}")
                    .timeout_ms(12_000),
            )
            .limit(SEED_MODEL, 4)
    }

    pub fn model(mut self, model: ModelSpec) -> TestConfig {
        self.models.push(model);
        self
    }

    /// Routes by default to `name` (else to the first model).
    pub fn default_route(mut self, name: &str) -> TestConfig {
        self.default_model = Some(name.to_string());
        self
    }

    /// A `routing.rules` entry: turns whose `field` (`conversation_id`,
    /// `conversation_type`, ...) is `value` go to `model`.
    pub fn rule(mut self, field: &str, value: &str, model: &str) -> TestConfig {
        self.rules
            .push((field.to_string(), value.to_string(), model.to_string()));
        self
    }

    /// At most `n` turns of model `name` at once.
    pub fn limit(mut self, name: &str, n: usize) -> TestConfig {
        self.limits.push((name.to_string(), n));
        self.explicit_limits = true;
        self
    }

    /// Writes `max_concurrency_per_model` even with no entry (as `{}`).
    pub fn explicit_limits(mut self) -> TestConfig {
        self.explicit_limits = true;
        self
    }

    /// `limits.queue`: at most `max_waiting` turns wait, each at most `max_wait_ms`.
    pub fn queue(self, max_waiting: usize, max_wait_ms: u64) -> TestConfig {
        let mut cfg = self.queue_wait_ms(max_wait_ms);
        cfg.queue.0 = Some(max_waiting);
        cfg
    }

    /// `limits.queue.max_wait_ms` only (the queue's depth stays the default).
    pub fn queue_wait_ms(mut self, max_wait_ms: u64) -> TestConfig {
        self.queue.1 = Some(max_wait_ms);
        self
    }

    pub fn dingtalk(mut self, channel: DingTalkSpec) -> TestConfig {
        self.dingtalk = Some(channel);
        self
    }

    /// Further top-level YAML sections, as written (e.g. `"reply:\n  max_parts: 2\n"`).
    pub fn section(mut self, yaml: &str) -> TestConfig {
        if !yaml.is_empty() {
            self.sections.push(yaml.to_string());
        }
        self
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let mut out = String::from("models:\n");
        for m in &self.models {
            m.render(&mut out);
        }
        let default = self
            .default_model
            .clone()
            .or_else(|| self.models.first().map(|m| m.name.clone()))
            .unwrap_or_default();
        let _ = writeln!(out, "routing:\n  defaults:\n    model: {default}");
        if !self.rules.is_empty() {
            out.push_str("  rules:\n");
            for (field, value, model) in &self.rules {
                let _ = writeln!(out, "    - {field}: \"{value}\"\n      model: {model}");
            }
        }
        let has_queue = self.queue.0.is_some() || self.queue.1.is_some();
        if self.explicit_limits || has_queue {
            out.push_str("limits:\n");
        }
        if self.explicit_limits {
            out.push_str("  max_concurrency_per_model:\n");
            if self.limits.is_empty() {
                out.push_str("    {}\n");
            }
            for (name, n) in &self.limits {
                let _ = writeln!(out, "    {name}: {n}");
            }
        }
        if has_queue {
            out.push_str("  queue:\n");
        }
        if let Some(max_waiting) = self.queue.0 {
            let _ = writeln!(out, "    max_waiting: {max_waiting}");
        }
        if let Some(max_wait_ms) = self.queue.1 {
            let _ = writeln!(out, "    max_wait_ms: {max_wait_ms}");
        }
        if let Some(channel) = &self.dingtalk {
            channel.render(&mut out);
        }
        for section in &self.sections {
            out.push_str(section);
            if !section.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}
