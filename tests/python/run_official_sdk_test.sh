#!/usr/bin/env bash
# Official-SDK conformance: the real `dingtalk-stream` Python SDK connects to
# `clawdbot sim serve`, receives an injected bot message, ACKs it and replies through the
# sessionWebhook; the test asserts the reply in the sim's outbox. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"
VENV="$(bash tests/python/setup.sh | tail -n1)"
BIN="${CLAWDBOT_BIN:-$TARGET/debug/clawdbot}"
if [ -z "${CLAWDBOT_BIN:-}" ]; then cargo build --quiet --bin clawdbot; fi
WORK="$(mktemp -d)"
cleanup() { if [ -n "${SIM_PID:-}" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
"$BIN" --home "$WORK" sim serve --listen 127.0.0.1:0 --port-file "$WORK/url" >/dev/null 2>"$WORK/sim.log" &
SIM_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/url" ] && break; sleep 0.05; done
[ -s "$WORK/url" ] || { echo "sim did not start"; cat "$WORK/sim.log"; exit 1; }
exec_timeout=60
timeout "$exec_timeout" "$VENV/bin/python" tests/python/official_sdk_test.py --sim "$(cat "$WORK/url")"
