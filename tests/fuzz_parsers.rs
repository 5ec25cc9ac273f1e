//! Property-based fuzzing of every parser that reads outside input: the config loader, the
//! control-socket frame reader, the model server's SSE stream and JSON bodies, DingTalk's
//! stream frames and robot messages, and callback signatures. No panic on any input, and
//! bounded memory (frames over the cap are refused before allocation; the SSE decoder
//! errors instead of buffering past its cap). Case counts scale with
//! `CLAWDBOT_FUZZ_CASES` (default 2000) for longer runs.

use clawdbot::dingtalk::message::parse_robot_message_str;
use clawdbot::dingtalk::verify_callback_sign;
use clawdbot::dingtalk::wire::Frame;
use clawdbot::ipc::frame::read_sync;
use clawdbot::ipc::{Request, Response, MAX_FRAME_BYTES};
use clawdbot::model::sse::{SseDecoder, SseError, SseItem, MAX_EVENT_BYTES};
use clawdbot::model::wire::{classify_http_error, parse_chunk, parse_completion};
use proptest::prelude::*;

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

    #[test]
    fn callback_signatures_never_panic_and_only_the_right_one_passes(
        ts in proptest::option::of(".{0,20}"),
        sign in proptest::option::of(".{0,60}"),
        now in any::<u64>(),
    ) {
        let ok = verify_callback_sign(ts.as_deref(), sign.as_deref(), "secret", now).is_ok();
        let right = ts
            .as_deref()
            .map(|t| clawdbot::dingtalk::compute_sign(t.trim(), "secret"));
        prop_assert!(!ok || right.as_deref() == sign.as_deref().map(str::trim));
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
