//! Property-based fuzzing of every parser that reads outside input: the config loader, the
//! control-socket frame reader, the model server's SSE stream and JSON bodies, DingTalk's
//! stream frames and robot messages, DingTalk's HTTP answers (new API, errcode, token,
//! `connections/open`), and callback signatures. No panic on any input, and bounded memory
//! (frames over the cap are refused before allocation; the SSE decoder errors instead of
//! buffering past its cap). The DingTalk generators build well-formed inputs as well as
//! broken ones, and each such test asserts that a share of its cases took the accept
//! path, so the properties are not only checked on rejections. Signatures are checked
//! against independent implementations (Python's `hmac`, the simulator's own HMAC).
//! Case counts scale with `CLAWDBOT_FUZZ_CASES` (default 2000) for longer runs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clawdbot::dingtalk::frame::handle_frame;
use clawdbot::dingtalk::http::{
    api_answer, errcode_answer, NOT_AN_OBJECT, NO_CODE_OR_MESSAGE, QUOTED_CHARS,
};
use clawdbot::dingtalk::message::parse_robot_message_str;
use clawdbot::dingtalk::sign::{compute_sign, webhook_sign_query, MAX_SKEW_MS};
use clawdbot::dingtalk::stream::open_answer;
use clawdbot::dingtalk::token::token_answer;
use clawdbot::dingtalk::verify_callback_sign;
use clawdbot::dingtalk::wire::{self, Frame};
use clawdbot::dingtalk::ChannelError;
use clawdbot::ipc::frame::read_sync;
use clawdbot::ipc::{Request, Response, MAX_FRAME_BYTES};
use clawdbot::model::sse::{SseDecoder, SseError, SseItem, MAX_EVENT_BYTES};
use clawdbot::model::wire::{classify_http_error, parse_chunk, parse_completion};
use clawdbot::sim::sign::{callback_signature, signature_matches};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("CLAWDBOT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[path = "support/config.rs"]
mod test_config;

/// The seed config with an API key that has a default (`${X:-k}`), so it loads anywhere.
static SEED: std::sync::LazyLock<String> = std::sync::LazyLock::new(seed);

fn seed() -> String {
    use test_config::{ModelSpec, TestConfig, SEED_MODEL};
    TestConfig::new()
        .model(
            ModelSpec::new(SEED_MODEL, "http://127.0.0.1:8000/v1")
                .served_as("local-chat")
                .api_key("${X:-k}")
                .timeout_ms(12_000),
        )
        .limit(SEED_MODEL, 4)
        .render()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = clawdbot::config::parse(&text);
    }

    /// Structure-heavy text (nesting, anchors, aliases, tags) drives the bounds pre-walk
    /// over libyaml's events, which is unsafe code: it never panics.
    #[test]
    fn config_parser_never_panics_on_nesting_anchors_and_aliases(
        text in "([\\[\\]{}:,?!|>#'\" \n-]|&a |&b |\\*a|\\*b|- |a: |x){0,300}",
    ) {
        let _ = clawdbot::config::parse(&text);
    }

    /// Any well-formed document nesting more than 64 collections is refused by depth.
    #[test]
    fn deep_nesting_is_refused_by_depth(
        depth in 64usize..400,
        inner in "[a-z0-9 ,]{0,20}",
        mapping in proptest::bool::ANY,
    ) {
        let (open, close) = if mapping { ("{a: ", "}") } else { ("[", "]") };
        let text = format!("models: {}{inner}{}\n", open.repeat(depth), close.repeat(depth));
        let e = clawdbot::config::parse(&text).unwrap_err();
        prop_assert!(
            matches!(e, clawdbot::config::ConfigProblem::Bounds(_)),
            "{}",
            e
        );
        prop_assert!(e.to_string().contains("nesting is deeper than 64 levels"), "{}", e);
    }

    #[test]
    fn config_parser_never_panics_on_mutated_seed(pos in 0usize..SEED.len(), del in 0usize..8, ins in "[ -~\n:{}\\[\\]$#&*!|>'\"-]{0,12}") {
        let mut s = SEED.to_string();
        let at = (0..=pos).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + del).min(s.len());
        s.replace_range(at..end, &ins);
        if let Err(e) = clawdbot::config::parse(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn frame_reader_never_panics_and_respects_the_cap(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_sync::<Request>(&mut bytes.as_slice());
        let _ = read_sync::<Response>(&mut bytes.as_slice());
    }

    #[test]
    fn frame_reader_handles_json_like_bodies(body in "\\{\"type\":\"[a-z_]{0,12}\"(,\"[a-z_]{1,8}\":[0-9a-z\"]{1,10}){0,3}\\}") {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        let _ = read_sync::<Request>(&mut frame.as_slice());
    }

    #[test]
    fn oversize_headers_are_refused_without_reading(len in (MAX_FRAME_BYTES as u32 + 1)..u32::MAX) {
        let header = len.to_be_bytes();
        prop_assert!(read_sync::<Request>(&mut header.as_slice()).is_err());
    }
}

/// Feeds `bytes` to a fresh decoder cut at `cuts` (byte offsets, any order); returns the
/// items, or the first error.
fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<SseItem>, SseError> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    let mut d = SseDecoder::new();
    let mut items = Vec::new();
    for w in at.windows(2) {
        items.extend(d.feed(&bytes[w[0]..w[1]])?);
    }
    items.extend(d.finish());
    Ok(items)
}

/// A robot message as DingTalk sends it, to mutate.
const ROBOT_MESSAGE: &str = r#"{"conversationId":"cidA==","conversationType":"2","msgId":"msg1","msgtype":"text","text":{"content":"@bot hi"},"senderStaffId":"u1","senderNick":"Li","sessionWebhook":"http://127.0.0.1:1/robot/sendBySession?session=s","sessionWebhookExpiredTime":1893456000000,"isInAtList":true,"robotCode":"dingX","createAt":1700000000000}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn sse_decoder_never_panics_on_arbitrary_bytes_in_arbitrary_pieces(
        bytes in proptest::collection::vec(any::<u8>(), 0..800),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = decode_in_pieces(&bytes, &cuts);
    }

    #[test]
    fn sse_events_decode_the_same_however_the_stream_is_cut(
        events in proptest::collection::vec("[^\r\n]{0,24}", 1..6),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text = format!(": ping{eol}");
        for e in &events {
            text.push_str(&format!("data: {e}{eol}{eol}"));
        }
        let whole = decode_in_pieces(text.as_bytes(), &[]).expect("whole stream");
        let pieces = decode_in_pieces(text.as_bytes(), &cuts).expect("cut stream");
        prop_assert_eq!(&whole, &pieces);
        let data: Vec<String> = whole
            .into_iter()
            .filter_map(|i| match i {
                SseItem::Data(d) => Some(d),
                SseItem::Comment => None,
            })
            .collect();
        // Only the one space after `data:` is syntax; the event text comes back as sent.
        let expected = events;
        prop_assert_eq!(data, expected);
    }

    #[test]
    fn model_json_parsers_never_panic(text in ".{0,300}", status in 100u16..600) {
        let _ = parse_chunk(&text);
        let _ = parse_completion(text.as_bytes());
        let _ = classify_http_error(status, text.as_bytes());
    }

    #[test]
    fn dingtalk_frames_and_robot_messages_never_panic(text in ".{0,300}") {
        let _ = handle_frame(&text);
        if let Ok(frame) = serde_json::from_str::<Frame>(&text) {
            let _ = (frame.topic(), frame.message_id());
            let _ = parse_robot_message_str(&frame.data, 0);
        }
        let _ = parse_robot_message_str(&text, 0);
    }

    #[test]
    fn mutated_robot_messages_parse_or_say_why(
        pos in 0usize..ROBOT_MESSAGE.len(),
        del in 0usize..12,
        ins in "[ -~]{0,10}",
    ) {
        let mut s = ROBOT_MESSAGE.to_string();
        let end = (pos + del).min(s.len());
        s.replace_range(pos..end, &ins);
        if let Err(e) = parse_robot_message_str(&s, 1_700_000_000_000) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn a_session_webhook_expiry_is_believable_or_expired(
        raw in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| if f.is_finite() { f.to_string() } else { "0".into() }),
            "\"[-0-9a-z]{0,22}\"",
            Just("null".to_string()),
        ],
        now in 0u64..4_000_000_000_000,
    ) {
        let msg = ROBOT_MESSAGE.replace("1893456000000", &raw);
        let m = parse_robot_message_str(&msg, now).expect("still a robot message");
        match m.session_webhook_expires_ms {
            None => prop_assert_eq!(raw.as_str(), "null"),
            Some(0) => {}
            Some(exp) => prop_assert!(
                exp <= now + clawdbot::dingtalk::message::MAX_SESSION_WEBHOOK_LIFETIME_MS,
                "{raw} -> {exp}"
            ),
        }
    }

    /// Arbitrary headers never panic, and whatever passes is the right signature by the
    /// simulator's independent implementation (not the bot's own function).
    #[test]
    fn callback_signatures_never_panic_and_only_the_right_one_passes(
        ts in proptest::option::of(".{0,20}"),
        sign in proptest::option::of(".{0,60}"),
        now in any::<u64>(),
    ) {
        let ok = verify_callback_sign(ts.as_deref(), sign.as_deref(), "secret", now).is_ok();
        let right = match (ts.as_deref(), sign.as_deref()) {
            (Some(t), Some(s)) => signature_matches(t.trim(), "secret", s.trim()),
            _ => false,
        };
        prop_assert!(!ok || right);
    }
}

#[test]
fn an_endless_sse_line_is_refused_at_the_cap() {
    let mut d = SseDecoder::new();
    let chunk = vec![b'x'; 64 * 1024];
    let mut fed = 0;
    let refused = loop {
        match d.feed(&chunk) {
            Ok(items) => assert!(items.is_empty()),
            Err(e) => break e,
        }
        fed += chunk.len();
        assert!(
            fed <= MAX_EVENT_BYTES + chunk.len(),
            "decoder kept buffering"
        );
    };
    assert_eq!(refused, SseError::EventTooLarge);
    assert!(refused.to_string().contains("larger than"), "{refused}");
}

/// Runs `property` on `cases()` generated values (the first counterexample fails the test,
/// shrunk) and returns how many cases took the accept path (the property returned true).
fn accepted_cases<S: Strategy>(
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let accepted = AtomicU32::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let run = runner.run(&strategy, |value| {
        if property(value)? {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = run {
        panic!("{e}");
    }
    accepted.into_inner()
}

/// Fails unless at least `percent` % of the cases were accepted. Each caller's `percent`
/// is about half the share its generator yields, so only a generator that stopped
/// reaching the accept path fails (at 2000 cases that is many standard deviations away).
fn assert_reaches_accept(what: &str, accepted: u32, percent: u32) {
    let total = cases();
    eprintln!("{what}: {accepted} of {total} generated cases accepted");
    assert!(
        accepted * 100 >= total * percent,
        "{what}: only {accepted} of {total} generated cases were accepted (want >= {percent}%)"
    );
}

/// Signs generated (timestamp, secret) pairs with Python's `hmac` (DingTalk's published
/// sample code: `hmac.new(secret, f"{ts}\n{secret}", sha256)`, `base64.b64encode`,
/// `urllib.parse.quote_plus`): each line of the answer is `base64 TAB url-encoded`.
fn python_signatures(inputs: &[(String, String)]) -> Vec<(String, String)> {
    const SCRIPT: &str = "import sys, json, hmac, hashlib, base64, urllib.parse\n\
        for line in sys.stdin:\n\
        \x20   ts, secret = json.loads(line)\n\
        \x20   key = secret.encode('utf-8')\n\
        \x20   mac = hmac.new(key, '{}\\n{}'.format(ts, secret).encode('utf-8'), hashlib.sha256)\n\
        \x20   b64 = base64.b64encode(mac.digest()).decode()\n\
        \x20   print(b64 + '\\t' + urllib.parse.quote_plus(b64))\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed here: its hmac module is the independent signature oracle");
    let mut stdin = child.stdin.take().expect("python stdin");
    let lines: String = inputs
        .iter()
        .map(|pair| format!("{}\n", serde_json::to_string(pair).unwrap()))
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let out = child.wait_with_output().expect("python3 ran");
    writer.join().unwrap().expect("inputs written to python3");
    assert!(out.status.success(), "python3 failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("python3 printed UTF-8");
    text.lines()
        .map(|l| {
            let (b64, url) = l.split_once('\t').expect("two columns");
            (b64.to_string(), url.to_string())
        })
        .collect()
}

/// The bot's signer and the simulator's agree with Python's `hmac` on generated inputs:
/// any timestamp text, long, empty and non-ASCII secrets (multi-block keys included), and
/// the webhook query's URL-encoding agrees with `quote_plus`. Fresh random inputs on each
/// run; a disagreement names its input.
#[test]
fn signatures_agree_with_pythons_hmac() {
    let mut runner = TestRunner::default();
    let input = (
        prop_oneof![any::<u64>().prop_map(|n| n.to_string()), ".{0,16}"],
        ".{0,90}",
    );
    let inputs: Vec<(String, String)> = (0..300)
        .map(|_| input.new_tree(&mut runner).expect("an input").current())
        .collect();
    let expected = python_signatures(&inputs);
    assert_eq!(expected.len(), inputs.len());
    for ((ts, secret), (b64, url)) in inputs.iter().zip(&expected) {
        assert_eq!(
            &compute_sign(ts, secret),
            b64,
            "bot: ts {ts:?} secret {secret:?}"
        );
        assert_eq!(&callback_signature(ts, secret), b64, "sim: ts {ts:?}");
        if let Ok(ms) = ts.parse::<u64>() {
            if ms.to_string() == *ts {
                assert_eq!(
                    webhook_sign_query(ms, secret),
                    format!("&timestamp={ts}&sign={url}")
                );
            }
        }
    }
}

/// (timestamp, secret, base64 `sign`, URL-encoded `sign`). The first inputs are DingTalk's
/// documented ones (the callback doc's example timestamp `1577262236757`, the robot doc's
/// sample secret `this is secret`); there is no published output, so every output was
/// computed with DingTalk's published Python sample (`hmac`, `base64.b64encode`,
/// `urllib.parse.quote_plus`) and agreed with
/// `printf '%s\n%s' TS SECRET | openssl dgst -sha256 -hmac SECRET -binary | base64`.
const DOCUMENTED_SIGNATURES: &[(&str, &str, &str, &str)] = &[
    (
        "1577262236757",
        "this is secret",
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=",
        "hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D",
    ),
    (
        "1577262236757",
        "app-secret-123",
        "eSrI7lxb4S9kAfPQWUAb0A/ZHnn9InpLylpzWzqeNC8=",
        "eSrI7lxb4S9kAfPQWUAb0A%2FZHnn9InpLylpzWzqeNC8%3D",
    ),
    (
        "1690000000000",
        "SECabc",
        "LviHz6JO+QuqigKhWUDUUOrppCH/c0HdQXCySgX7CmM=",
        "LviHz6JO%2BQuqigKhWUDUUOrppCH%2Fc0HdQXCySgX7CmM%3D",
    ),
    (
        "1700000000000",
        "SECtest",
        "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g=",
        "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g%3D",
    ),
    // A key longer than SHA-256's 64-byte block is hashed first (RFC 2104).
    (
        "1717000000123",
        "SECffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "12/pX0DGihJ3i9Sy3LY4npyKo+kwq+ml2Tthf+GF4bY=",
        "12%2FpX0DGihJ3i9Sy3LY4npyKo%2Bkwq%2Bml2Tthf%2BGF4bY%3D",
    ),
    // Non-ASCII secrets are signed as UTF-8.
    (
        "1717000000123",
        "密钥-ü",
        "L4SBSgvvH+jr8nX5VCRVl1y3XVGVBE97iLsuPUxVsxY=",
        "L4SBSgvvH%2Bjr8nX5VCRVl1y3XVGVBE97iLsuPUxVsxY%3D",
    ),
];

/// The bot's signer, its callback check, its webhook query and the simulator's separate
/// signer all reproduce the independently computed vectors.
#[test]
fn documented_signature_vectors_hold_in_both_implementations() {
    for (ts, secret, b64, url) in DOCUMENTED_SIGNATURES {
        let ms: u64 = ts.parse().unwrap();
        assert_eq!(compute_sign(ts, secret), *b64, "bot: {ts} {secret}");
        assert_eq!(
            verify_callback_sign(Some(ts), Some(b64), secret, ms + 1_000),
            Ok(ms)
        );
        assert_eq!(
            webhook_sign_query(ms, secret),
            format!("&timestamp={ts}&sign={url}")
        );
        assert_eq!(callback_signature(ts, secret), *b64, "sim: {ts} {secret}");
        assert!(signature_matches(ts, secret, b64));
    }
}

/// How a generated callback signature is spoiled (or not).
#[derive(Debug, Clone)]
enum Tamper {
    Untouched,
    /// Blanks around both headers (HTTP stacks may keep them): still accepted.
    Padded,
    SignedWithAnotherSecret,
    CharReplaced(usize),
    Truncated,
    SignMissing,
}

/// A callback signed correctly (by the simulator's independent signer) at some distance
/// from now is accepted exactly when it is untouched and within the hour; most generated
/// cases are genuine, so the accept path is exercised, not only refusals.
#[test]
fn genuine_callback_signatures_pass_and_spoiled_ones_do_not() {
    let skew = MAX_SKEW_MS as i64;
    let strategy = (
        ".{0,40}",
        prop_oneof![3 => -skew..=skew, 1 => -3 * skew..=3 * skew],
        1_500_000_000_000u64..2_000_000_000_000,
        prop_oneof![
            5 => Just(Tamper::Untouched),
            1 => Just(Tamper::Padded),
            1 => Just(Tamper::SignedWithAnotherSecret),
            1 => any::<usize>().prop_map(Tamper::CharReplaced),
            1 => Just(Tamper::Truncated),
            1 => Just(Tamper::SignMissing),
        ],
    );
    let accepted = accepted_cases(strategy, |(secret, offset, now, tamper)| {
        let ts = now.checked_add_signed(offset).unwrap().to_string();
        let good = callback_signature(&ts, &secret);
        let (ts_header, sign) = match &tamper {
            Tamper::Untouched => (ts.clone(), Some(good)),
            Tamper::Padded => (format!(" {ts} "), Some(format!(" {good}\t"))),
            Tamper::SignedWithAnotherSecret => (
                ts.clone(),
                Some(callback_signature(&ts, &format!("{secret}x"))),
            ),
            Tamper::CharReplaced(at) => {
                let mut chars: Vec<char> = good.chars().collect();
                let i = at % chars.len();
                chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
                (ts.clone(), Some(chars.into_iter().collect()))
            }
            Tamper::Truncated => (ts.clone(), Some(good[..good.len() - 1].to_string())),
            Tamper::SignMissing => (ts.clone(), None),
        };
        let verdict = verify_callback_sign(Some(&ts_header), sign.as_deref(), &secret, now);
        let genuine = matches!(tamper, Tamper::Untouched | Tamper::Padded);
        let fresh = offset.unsigned_abs() <= MAX_SKEW_MS;
        prop_assert_eq!(
            verdict.is_ok(),
            genuine && fresh,
            "{:?} {:?}",
            tamper,
            verdict
        );
        if let Ok(signed_at) = verdict {
            prop_assert_eq!(signed_at.to_string(), ts);
        }
        Ok(verdict.is_ok())
    });
    assert_reaches_accept("callback signatures", accepted, 20);
}

/// A downstream frame as DingTalk could send it: known and unknown types and topics,
/// message ids as strings, numbers or absent, data that is a robot message, a ping's
/// opaque, or anything; one in five is then cut and spliced at random.
fn stream_frames() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        1 => Just(wire::TYPE_SYSTEM.to_string()),
        1 => Just(wire::TYPE_EVENT.to_string()),
        4 => Just(wire::TYPE_CALLBACK.to_string()),
        1 => "[A-Za-z]{0,8}",
    ];
    let topic = prop_oneof![
        4 => Just(wire::TOPIC_BOT_MESSAGE.to_string()),
        1 => Just(wire::TOPIC_BOT_DELEGATE.to_string()),
        1 => Just(wire::TOPIC_CARD_CALLBACK.to_string()),
        1 => Just(wire::TOPIC_PING.to_string()),
        1 => Just(wire::TOPIC_DISCONNECT.to_string()),
        1 => "[/a-z.0-9]{0,20}",
    ];
    let message_id = prop_oneof![
        4 => "[a-z0-9_]{1,30}".prop_map(Value::from),
        1 => any::<u32>().prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    let data = prop_oneof![
        4 => Just(ROBOT_MESSAGE.to_string()),
        1 => "[a-f0-9-]{0,36}".prop_map(|o| json!({"opaque": o}).to_string()),
        1 => ".{0,40}",
    ];
    let splice = proptest::option::weighted(0.2, (any::<usize>(), 0usize..8, "[ -~]{0,6}"));
    (kind, topic, message_id, data, splice).prop_map(|(kind, topic, id, data, splice)| {
        let mut headers = json!({"topic": topic, "contentType": "application/json"});
        if !id.is_null() {
            headers["messageId"] = id;
        }
        let mut text =
            json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": data})
                .to_string();
        if let Some((at, del, ins)) = splice {
            let boundary = |i: usize| {
                (0..=i)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0)
            };
            let at = boundary(at % (text.len() + 1));
            let end = boundary((at + del).min(text.len()));
            text.replace_range(at..end, &ins);
        }
        text
    })
}

/// Every frame that parses is ACKed 200 with its own messageId (a ping's ACK echoes its
/// data); `disconnect` is seen; robot messages are handed over with their id and data
/// text; frames that do not parse do nothing. Most generated frames are robot
/// messages that get handed over.
#[test]
fn stream_frames_are_acked_and_robot_messages_handed_over() {
    let accepted = accepted_cases(stream_frames(), |text| {
        let handled = handle_frame(&text);
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            prop_assert!(handled.ack.is_none() && handled.robot_message.is_none());
            prop_assert!(!handled.disconnect);
            return Ok(false);
        };
        let ack: Value = serde_json::from_str(handled.ack.as_deref().unwrap_or("")).unwrap();
        prop_assert_eq!(&ack["code"], &json!(200));
        prop_assert_eq!(
            ack["headers"]["messageId"].as_str().map(str::to_string),
            frame.message_id()
        );
        let topic = frame.topic();
        let system = frame.kind == wire::TYPE_SYSTEM;
        if system && topic == wire::TOPIC_PING {
            prop_assert_eq!(ack["data"].as_str(), Some(frame.data.as_str()));
        }
        prop_assert_eq!(
            handled.disconnect,
            system && topic == wire::TOPIC_DISCONNECT
        );
        let bot_topic = topic == wire::TOPIC_BOT_MESSAGE || topic == wire::TOPIC_BOT_DELEGATE;
        let expected = (frame.kind == wire::TYPE_CALLBACK && bot_topic)
            .then(|| (frame.message_id(), frame.data.clone()));
        prop_assert_eq!(&handled.robot_message, &expected);
        Ok(handled.robot_message.is_some())
    });
    assert_reaches_accept("stream frames", accepted, 10);
}

/// HTTP statuses DingTalk answers with, and any other.
fn http_status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![204u16, 400, 401, 403, 500, 502, 504]),
        1 => 100u16..600,
    ]
}

/// A JSON value of a kind a field might wrongly carry.
fn odd_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"nested": [1]})),
    ]
}

/// New-API answers: a 2xx is its JSON body (empty body → null; not JSON → an error)
/// unless the body holds a refusal (a non-empty `code`, or an `errcode` other than 0, as a
/// gateway in front of DingTalk may answer 200): never success then. Any other status is
/// an `Api` error. The `code` and `message` an `Api` error carries are DingTalk's as they
/// are when short and plain (a number as its digits), else escaped to one line and cut to
/// `QUOTED_CHARS`; with neither, the message says the answer had none.
#[test]
fn new_api_answers_are_read_by_status_and_shape() {
    let errcode = prop_oneof![
        2 => Just(json!(0)),
        1 => Just(json!("0")),
        2 => prop::sample::select(vec![-1i64, 300001, 40035]).prop_map(Value::from),
        1 => odd_json(),
    ];
    let body = prop_oneof![
        3 => Just(json!({"processQueryKey": "pqk1"}).to_string()),
        2 => (".{0,20}", ".{0,20}").prop_map(|(c, m)| {
            json!({"code": c, "message": m, "requestid": "r-1"}).to_string()
        }),
        1 => (odd_json(), odd_json()).prop_map(|(c, m)| json!({"code": c, "message": m}).to_string()),
        1 => ("[a-z\\n]{290,310}").prop_map(|m| json!({"code": "C", "message": m}).to_string()),
        2 => (errcode, ".{0,12}").prop_map(|(e, m)| {
            json!({"processQueryKey": "pqk1", "errcode": e, "errmsg": m}).to_string()
        }),
        1 => Just(String::new()),
        1 => ".{0,30}",
    ];
    let accepted = accepted_cases((http_status(), body), |(status, body)| {
        let read = api_answer("/v1.0/robot/groupMessages/send", status, &body, "");
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).cloned();
        let text = |k: &str| match field(k) {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let code_given = match field("code") {
            None | Some(Value::Null) => false,
            Some(Value::String(c)) => !c.is_empty(),
            Some(_) => true,
        };
        let errcode = field("errcode").filter(|e| !e.is_null()).map(|e| match e {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        });
        let success_status = (200..300).contains(&status);
        let refused_anyway = code_given || errcode.is_some_and(|e| e != Some(0));
        match &read {
            Ok(v) => {
                prop_assert!(
                    success_status && !refused_anyway,
                    "HTTP {} {:?}",
                    status,
                    body
                );
                let expected = parsed.clone().unwrap_or(Value::Null);
                prop_assert_eq!(v, &expected);
                prop_assert!(body.trim().is_empty() || !v.is_null());
            }
            Err(ChannelError::Unreadable { .. }) => {
                prop_assert!(success_status);
                let not_json =
                    parsed.as_ref().is_none_or(Value::is_null) && !body.trim().is_empty();
                let unreadable_errcode = !code_given && errcode == Some(None);
                prop_assert!(not_json || unreadable_errcode, "HTTP {} {:?}", status, body);
            }
            Err(ChannelError::Errcode { errcode: e, .. }) => {
                prop_assert!(success_status && !code_given);
                prop_assert_eq!(errcode, Some(Some(*e)));
                prop_assert!(*e != 0);
            }
            Err(ChannelError::Api {
                status: s,
                code,
                message,
                ..
            }) => {
                prop_assert_eq!(*s, status);
                prop_assert!(!success_status || code_given, "HTTP {} {:?}", status, body);
                if text("code").is_empty() && text("message").is_empty() {
                    // Nothing to quote: the message says so instead of nothing.
                    let object = parsed.as_ref().is_some_and(Value::is_object);
                    let expected = if object {
                        NO_CODE_OR_MESSAGE
                    } else {
                        NOT_AN_OBJECT
                    };
                    prop_assert_eq!((code.as_str(), message.as_str()), ("", expected));
                    return Ok(false);
                }
                for (quoted, key) in [(code, "code"), (message, "message")] {
                    let answered = text(key);
                    // Letters, digits, punctuation and spaces are never escaped.
                    let plain = answered
                        .chars()
                        .all(|c| c.is_alphanumeric() || c.is_ascii_punctuation() || c == ' ')
                        && answered.chars().count() <= QUOTED_CHARS;
                    if plain {
                        prop_assert_eq!(quoted, &answered);
                    } else {
                        prop_assert!(!quoted.contains(char::is_control), "{:?}", quoted);
                        prop_assert!(quoted.chars().count() <= QUOTED_CHARS + 1);
                    }
                }
            }
            Err(other) => prop_assert!(false, "HTTP {} {:?} -> {:?}", status, body, other),
        }
        Ok(read.is_ok())
    });
    assert_reaches_accept("new-API answers", accepted, 30);
}

/// Webhook / old-API answers: success only for a 2xx whose errcode is absent or reads as
/// 0; a readable non-zero errcode is an `Errcode` error with that code; anything else
/// (unreadable errcode, not JSON, an error status without errcode) is an `Unreadable` error.
#[test]
fn errcode_answers_are_success_only_for_a_readable_zero() {
    let errcode = prop_oneof![
        3 => Just(json!(0)),
        1 => prop::sample::select(vec![-1i64, 300001, 130101, 310000]).prop_map(Value::from),
        1 => any::<i64>().prop_map(|n| json!(n.to_string())),
        1 => odd_json(),
    ];
    let body = prop_oneof![
        4 => (errcode, ".{0,12}").prop_map(|(e, m)| json!({"errcode": e, "errmsg": m}).to_string()),
        1 => Just("{}".to_string()),
        1 => ".{0,20}",
    ];
    let accepted = accepted_cases((http_status(), body), |(status, body)| {
        let read = errcode_answer("sessionWebhook", status, &body);
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("errcode"))
            .map(|e| match e {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            });
        let ok_status = (200..300).contains(&status);
        match &read {
            Ok(_) => prop_assert!(ok_status && matches!(code, None | Some(Some(0)))),
            Err(ChannelError::Errcode { errcode, .. }) => {
                prop_assert_eq!(code, Some(Some(*errcode)));
                prop_assert!(*errcode != 0 || !ok_status);
            }
            Err(ChannelError::Unreadable { .. }) => prop_assert!(
                parsed.is_none() || matches!(code, Some(None)) || (code.is_none() && !ok_status)
            ),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
        Ok(read.is_ok())
    });
    assert_reaches_accept("errcode answers", accepted, 15);
}

/// Token answers: a token for a 2xx with a non-empty `accessToken` string, used for at
/// most DingTalk's documented 2 h minus the refresh margin, whatever `expireIn` says, so
/// the cache can always add it to the clock.
#[test]
fn token_answers_give_a_token_and_a_bounded_lifetime() {
    let token = prop_oneof![4 => "[A-Za-z0-9]{1,40}".prop_map(Value::from), 1 => odd_json()];
    let expire = prop_oneof![
        2 => (0u64..10_000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => odd_json(),
    ];
    let body = prop_oneof![
        5 => (token, proptest::option::of(expire)).prop_map(|(t, e)| {
            let mut v = json!({"accessToken": t});
            if let Some(e) = e {
                v["expireIn"] = e;
            }
            v.to_string()
        }),
        1 => ".{0,30}",
    ];
    let accepted = accepted_cases((http_status(), body), |(status, body)| {
        let read = token_answer(status, &body, "");
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let token = parsed
            .as_ref()
            .and_then(|v| v.get("accessToken"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let good = (200..300).contains(&status) && token.is_some();
        prop_assert_eq!(
            read.is_ok(),
            good,
            "HTTP {} {:?} -> {:?}",
            status,
            body,
            read
        );
        if let Ok(issued) = &read {
            prop_assert_eq!(Some(issued.token.as_str()), token);
            prop_assert!(issued.use_for <= Duration::from_secs(7_200));
            prop_assert!(Instant::now().checked_add(issued.use_for).is_some());
            let stated = parsed
                .as_ref()
                .and_then(|v| v.get("expireIn"))
                .and_then(Value::as_u64);
            if let Some(secs) = stated.filter(|s| *s <= 7_200) {
                prop_assert_eq!(
                    issued.use_for,
                    Duration::from_secs(secs.saturating_sub(300))
                );
            }
        }
        Ok(read.is_ok())
    });
    assert_reaches_accept("token answers", accepted, 20);
}

/// `connections/open` answers: an endpoint and a ticket only when both are non-empty
/// strings in a 2xx answer.
#[test]
fn open_answers_need_an_endpoint_and_a_ticket() {
    let field = prop_oneof![
        4 => Just(Value::from("wss://127.0.0.1:1/connect")),
        1 => Just(Value::from("")),
        1 => odd_json(),
    ];
    let body = prop_oneof![
        5 => (field.clone(), field).prop_map(|(e, t)| json!({"endpoint": e, "ticket": t}).to_string()),
        1 => ".{0,30}",
    ];
    let accepted = accepted_cases((http_status(), body), |(status, body)| {
        let read = open_answer(status, &body, "");
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let good = (200..300).contains(&status)
            && field("endpoint").is_some()
            && field("ticket").is_some();
        prop_assert_eq!(
            read.is_ok(),
            good,
            "HTTP {} {:?} -> {:?}",
            status,
            body,
            read
        );
        if let Ok(open) = &read {
            prop_assert_eq!(Some(open.endpoint.clone()), field("endpoint"));
            prop_assert_eq!(Some(open.ticket.clone()), field("ticket"));
        }
        Ok(read.is_ok())
    });
    assert_reaches_accept("connections/open answers", accepted, 12);
}
