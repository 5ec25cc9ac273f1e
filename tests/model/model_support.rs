//! Shared helpers for the `model_*` tests: configs pointing at the in-process fake model
//! server, turns, and bounded polling (no fixed sleeps).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot::config::{Config, ConversationKind};
use clawdbot::model::{ChatMessage, ModelRouter, Turn, TurnHooks, TurnOutcome};
use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig, FakeMode, FakeServer};

pub use crate::test_config::ModelSpec;
use crate::test_config::TestConfig;

/// One `models:` entry; `extra` holds further YAML keys, one per line, unindented.
pub fn model(name: &str, base_url: &str, extra: &str) -> ModelSpec {
    ModelSpec::new(name, base_url).keys(extra)
}

/// A config with `models` (from [`model`]), the first one as the default route, and the
/// given limits and queue.
pub fn config(
    models: &[ModelSpec],
    limits: &[(&str, usize)],
    max_waiting: usize,
    max_wait_ms: u64,
) -> Config {
    let mut cfg = models
        .iter()
        .fold(TestConfig::new(), |cfg, m| cfg.model(m.clone()))
        .explicit_limits()
        .queue(max_waiting, max_wait_ms)
        .section("prompt:\n  max_chars: 1000\n");
    for (name, n) in limits {
        cfg = cfg.limit(name, *n);
    }
    let y = cfg.render();
    clawdbot::config::parse(&y).unwrap_or_else(|e| panic!("test config: {e}\n{y}"))
}

/// A turn with the prompt the test asks (the bot builds its prompt in its hooks).
pub struct Asked {
    pub turn: Turn,
    pub messages: Vec<ChatMessage>,
}

pub fn turn(conversation: &str, text: &str) -> Asked {
    Asked {
        turn: Turn {
            conversation_id: conversation.to_string(),
            user_id: Some("u1".into()),
            kind: ConversationKind::Group,
            arrived: Instant::now(),
            waited_in_line: Duration::ZERO,
        },
        messages: vec![ChatMessage::system("Be brief."), ChatMessage::user(text)],
    }
}

/// Hooks with a fixed prompt, passing streamed text to `on_progress`.
pub struct FixedPrompt<'a> {
    pub messages: Vec<ChatMessage>,
    pub on_progress: &'a mut (dyn FnMut(&str) + Send),
}

impl TurnHooks for FixedPrompt<'_> {
    fn prepare(&mut self) -> Vec<ChatMessage> {
        self.messages.clone()
    }
    fn progress(&mut self, full_text: &str) {
        (self.on_progress)(full_text)
    }
    fn answered(&mut self, _text: &str) {}
}

/// Runs one turn with its fixed prompt; `on_progress` gets the full text so far.
pub async fn answer(
    router: &ModelRouter,
    asked: Asked,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> TurnOutcome {
    let mut hooks = FixedPrompt {
        messages: asked.messages,
        on_progress,
    };
    router.answer_with(&asked.turn, &mut hooks).await
}

pub async fn fake(default: FakeBehavior) -> FakeServer {
    FakeServer::start(FakeConfig {
        default,
        ..FakeConfig::default()
    })
    .await
    .expect("fake server")
}

pub fn behavior(mode: FakeMode) -> FakeBehavior {
    FakeBehavior {
        mode,
        ..FakeBehavior::default()
    }
}

/// Runs one turn, collecting every progress text.
pub async fn ask(router: &ModelRouter, t: Asked) -> (TurnOutcome, Vec<String>) {
    let mut seen = Vec::new();
    let mut progress = |s: &str| seen.push(s.to_string());
    let outcome = answer(router, t, &mut progress).await;
    (outcome, seen)
}

/// Polls `cond` every 5 ms for at most `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A loopback port nothing listens on.
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

pub fn failed_reason(o: &TurnOutcome) -> (&str, bool) {
    match o {
        TurnOutcome::Failed { reason, timed_out } => (reason.as_str(), *timed_out),
        other => panic!("expected Failed, got {other:?}"),
    }
}

pub fn answer_text(o: &TurnOutcome) -> &str {
    match o {
        TurnOutcome::Answer { text, .. } => text,
        other => panic!("expected Answer, got {other:?}"),
    }
}

/// The order in which turns were answered, noted by each turn while it still holds its
/// slot (in `answered`): noting it after the turn's task returns would race turns granted
/// since, which may already have answered by then.
#[derive(Clone, Default)]
pub struct AnswerOrder(Arc<Mutex<Vec<String>>>);

impl AnswerOrder {
    /// Hooks for one turn that notes `name` here when the turn is answered.
    pub fn hooks(&self, name: &str, asked: &Asked) -> OrderHooks {
        OrderHooks {
            name: name.to_string(),
            prompt: asked.messages.clone(),
            order: self.clone(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// See [`AnswerOrder::hooks`].
pub struct OrderHooks {
    name: String,
    prompt: Vec<ChatMessage>,
    order: AnswerOrder,
}

impl TurnHooks for OrderHooks {
    fn prepare(&mut self) -> Vec<ChatMessage> {
        self.prompt.clone()
    }
    fn progress(&mut self, _full_text: &str) {}
    fn answered(&mut self, _text: &str) {
        self.order.0.lock().unwrap().push(self.name.clone());
    }
}
