#!/usr/bin/env bash
# Creates target/python-venv with the official DingTalk Stream SDK, pinned.
# dingtalk-stream 0.24.3 imports `websockets` at module level and uses the legacy
# `websockets.connect` client; websockets 13.1 is the last release where that API is the
# default, so it is pinned too. aiohttp is the reference bot's HTTP client (benches/reference_bot).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${CARGO_TARGET_DIR:-target}/python-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "dingtalk-stream==0.24.3" "websockets==13.1" "aiohttp==3.14.5"
echo "$VENV"
