//! Property-based fuzzing of the input parsers: no panic on any input, and bounded memory
//! (frames over the cap are refused before allocation). Case counts scale with
//! `CLAWDBOT_FUZZ_CASES` (default 2000) for longer runs.

use clawdbot::ipc::frame::read_sync;
use clawdbot::ipc::{Request, Response, MAX_FRAME_BYTES};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("CLAWDBOT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

const SEED: &str = "models:\n  local_chat:\n    kind: openai_compatible\n    base_url: \"http://127.0.0.1:8000/v1\"\n    api_key: ${X:-k}\n    model: \"local-chat\"\n    timeout_ms: 12000\nrouting:\n  defaults:\n    model: local_chat\nlimits:\n  max_concurrency_per_model:\n    local_chat: 4\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = clawdbot::config::parse(&text);
    }

    #[test]
    fn config_parser_never_panics_on_mutated_seed(pos in 0usize..SEED.len(), del in 0usize..8, ins in "[ -~\n:{}\\[\\]$#&*!|>'\"-]{0,12}") {
        let mut s = SEED.to_string();
        let at = (0..=pos).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + del).min(s.len());
        s.replace_range(at..end, &ins);
        if let Err(e) = clawdbot::config::parse(&s) {
            prop_assert!(!e.is_empty());
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
