//! `logging.level` applies to clawdbot's own targets only: at `trace` the log is verbose,
//! yet no dependency logs a WebSocket frame or an HTTP body, so message text, the session
//! webhook URL and secrets never reach a log file.

use crate::support;

use std::time::Duration;

use clawdbot_testkit::fake_model::FakeConfig;
use serde_json::json;
use support::stack::{Stack, CLIENT_SECRET};

#[test]
fn at_trace_level_no_message_text_or_webhook_url_reaches_the_log() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "logging:\n  level: trace\n");
    stack.start_bot(&cfg);
    let canary = "CANARY-trace-8812 quarterly numbers";
    let injected = stack.inject(json!({"text": canary, "conversation_type": "group",
        "conversation_id": "cidTrace==", "sender_staff_id": "0423001"}));
    let webhook = injected["payload"]["sessionWebhook"]
        .as_str()
        .expect("the simulator hands out a session webhook")
        .to_string();
    let out = stack.wait_outbox(1, Duration::from_secs(10));
    assert!(out[0]["text"].as_str().unwrap().contains(canary), "{out:?}");
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let logs = stack.home.all_logs();
    assert!(
        logs.contains(" DEBUG ") || logs.contains(" TRACE "),
        "the configured level does not apply to clawdbot's own targets:\n{logs}"
    );
    let token = webhook.rsplit("session=").next().unwrap_or(&webhook);
    for (what, secret) in [
        ("message text", "CANARY-trace-8812"),
        ("session webhook URL", webhook.as_str()),
        ("session webhook token", token),
        ("client secret", CLIENT_SECRET),
    ] {
        assert!(!logs.contains(secret), "{what} in the log:\n{logs}");
    }
}

/// The log's hash of a message is keyed: it is HMAC-SHA256 under the install's key
/// (`STATE/log-hash.key`, 0600), never the plain SHA-256 that a 6-digit code could be
/// recovered from by trying all of them.
#[test]
fn message_hashes_are_keyed_by_a_private_per_install_key() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;

    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let code = "804217";
    stack.inject_group("cidHash==", code);
    stack.wait_outbox(1, Duration::from_secs(10));
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let key_path = stack.home.path().join("state").join("log-hash.key");
    let meta = std::fs::metadata(&key_path).expect("the daemon made a key");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read(&key_path).unwrap();
    assert_eq!(key.len(), 32);
    let hex = |bytes: &[u8]| -> String { bytes[..4].iter().map(|b| format!("{b:02x}")).collect() };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(code.as_bytes());
    let keyed = hex(&mac.finalize().into_bytes());
    let unkeyed = hex(&Sha256::digest(code.as_bytes()));

    let logs = stack.home.all_logs();
    assert!(
        logs.contains(&format!("<6 chars, hmac:{keyed}>")),
        "no keyed hash of the message:\n{logs}"
    );
    assert!(
        !logs.contains(&unkeyed),
        "an unkeyed hash is in the log:\n{logs}"
    );
    assert!(!logs.contains(code), "the message is in the log:\n{logs}");
    // One answered turn, two records (in either order: the ingress logs once the message
    // is stored, the turn may be quicker): its arrival and its outcome, which carries the
    // question's hash (no third line saying the same).
    let turn: Vec<&str> = logs.lines().filter(|l| l.contains("cidHash==")).collect();
    let arrival = turn.iter().any(|l| l.contains("robot message received"));
    let outcome = turn
        .iter()
        .any(|l| l.contains(" answered ") && l.contains(&format!("hmac:{keyed}")));
    assert!(turn.len() == 2 && arrival && outcome, "{turn:#?}");
}

/// A conversation id (or any field) holding line breaks cannot forge a log record: every
/// control character of every field is escaped in the text log.
#[test]
fn control_characters_in_logged_fields_cannot_forge_log_lines() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let hostile = "cidX==\n2026-01-01T00:00:00Z  INFO FAKE LOG LINE\r\u{2028}\u{1b}[2J";
    stack.inject_group(hostile, "hello");
    stack.wait_outbox(1, Duration::from_secs(10));
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let logs = stack.home.all_logs();
    assert!(
        logs.contains("cidX==\\n2026-01-01T00:00:00Z  INFO FAKE LOG LINE\\r\\u{2028}\\u{1b}[2J"),
        "the conversation id is not logged escaped:\n{logs}"
    );
    for line in logs.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z") && !line.contains("FAKE LOG LINE\r"),
            "a forged line: {line:?}"
        );
    }
    for c in ['\r', '\u{2028}', '\u{1b}'] {
        assert!(!logs.contains(c), "{c:?} reached the log raw");
    }
}

/// Splits a text log line into its space-separated tokens, a `"..."` value (with `\"` and
/// `\\` escapes) staying inside its token: how a log parser reads `name=value` fields.
fn log_tokens(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ' ' && !quoted {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    tokens.push(cur);
    tokens
}

/// Red-team F6: spaces, `=` and `"` in a logged value cannot forge other fields: such a
/// value is quoted (with `"` and `\` escaped), so each field parses unambiguously.
#[test]
fn spaces_and_equals_in_logged_values_cannot_forge_fields() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.config(2, 5000, "");
    stack.start_bot(&cfg);
    let hostile = "cidX== msg_id=mFORGED kind=\"Direct\\";
    stack.inject_group(hostile, "hello");
    stack.wait_outbox(1, Duration::from_secs(10));
    let stop = stack
        .home
        .run(&["daemon", "stop", "--name", "bot", "--timeout", "5"]);
    assert_eq!(stop.code, 0, "{stop:?}");

    let logs = stack.home.all_logs();
    assert!(
        logs.contains(r#"conversation="cidX== msg_id=mFORGED kind=\"Direct\\""#),
        "the conversation id is not logged quoted:\n{logs}"
    );
    let mut seen = 0;
    for line in logs.lines() {
        let tokens = log_tokens(line);
        assert!(
            !tokens.iter().any(|t| t == "msg_id=mFORGED"),
            "a forged field: {line:?}"
        );
        if tokens
            .iter()
            .any(|t| t == &format!("conversation={hostile}"))
        {
            seen += 1;
        }
    }
    assert!(seen > 0, "the value parses back whole:\n{logs}");
}
