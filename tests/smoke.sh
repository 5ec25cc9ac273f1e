#!/usr/bin/env bash
# Operator smoke test: the seed's commands, verbatim, against the local DingTalk simulator
# (which also serves an echo model at $SIM/demo/v1). No DingTalk account, no model server,
# no internet: everything runs on 127.0.0.1 under a throw-away CLAWDBOT_HOME.
#
#   bash tests/smoke.sh             # uses `clawdbot` from PATH
#   CLAWDBOT=target/debug/clawdbot bash tests/smoke.sh
#
# Exit 0 when every step gave the expected exit code and the simulator's outbox holds the
# "ping"; otherwise the failing step, the daemon's last log lines, and exit 1.
set -euo pipefail

# An absolute path to the binary (resolved before the `clawdbot` function below exists).
CLAWDBOT_BIN=$(type -P "${CLAWDBOT:-clawdbot}" || true)
if [ -z "$CLAWDBOT_BIN" ]; then
    echo "smoke: ${CLAWDBOT:-clawdbot} not found (put clawdbot on PATH or set CLAWDBOT=...)" >&2
    exit 1
fi
# The commands below say `clawdbot`, exactly as an operator types them.
clawdbot() { "$CLAWDBOT_BIN" "$@"; }

HOME_DIR=$(mktemp -d /tmp/clawdbot-smoke.XXXXXX)
export CLAWDBOT_HOME="$HOME_DIR"
export NO_COLOR=1
SIM_PID=""
echo "smoke: home $HOME_DIR" >&2

cleanup() {
    local rc=$?
    set +e
    clawdbot daemon stop --name dingtalk-bot --timeout 5 >/dev/null 2>&1
    if [ -n "$SIM_PID" ]; then
        kill "$SIM_PID" 2>/dev/null
        wait "$SIM_PID" 2>/dev/null
    fi
    rm -rf "$HOME_DIR"
    exit "$rc"
}
trap cleanup EXIT INT TERM

fail() {
    echo "smoke: FAIL: $*" >&2
    if [ -f "$HOME_DIR/logs/dingtalk-bot.log" ]; then
        echo "--- last lines of the bot's log" >&2
        tail -n 20 "$HOME_DIR/logs/dingtalk-bot.log" >&2
    fi
    exit 1
}

# expect CODE COMMAND...: runs the command, fails the smoke test on another exit code.
expect() {
    local want=$1
    shift
    local got=0
    "$@" || got=$?
    if [ "$got" -ne "$want" ]; then
        fail "\`$*\` exited $got, expected $want"
    fi
    echo "smoke: ok (exit $got): $*" >&2
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls the command every 0.1 s, bounded.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "$what (waited ${secs}s)"
        fi
        sleep 0.1
    done
}

# 1. The simulator stands in for DingTalk (default app: dingsimclient / sim-client-secret).
# The binary itself (not the shell function), so that $! is the simulator's own pid.
"$CLAWDBOT_BIN" sim serve --port-file "$HOME_DIR/sim.url" >"$HOME_DIR/sim.out" 2>&1 &
SIM_PID=$!
wait_for 15 "the simulator did not write its port file" test -s "$HOME_DIR/sim.url"
SIM=$(cat "$HOME_DIR/sim.url")
echo "smoke: simulator at $SIM" >&2

# 2. The seed's smoke test. The secret stays out of the file as ${DINGTALK_APP_SECRET}.
export DINGTALK_APP_SECRET=sim-client-secret
expect 0 clawdbot onboard --channel dingtalk --config "$HOME_DIR/dingtalk.yaml" \
    --non-interactive --client-id dingsimclient --client-secret-env DINGTALK_APP_SECRET \
    --api-base "$SIM" --model-base-url "$SIM/demo/v1" --model local-chat \
    --target "test-group=cidSmokeGroup=="
[ "$(stat -c %a "$HOME_DIR/dingtalk.yaml")" = 600 ] || fail "the config is not mode 0600"
if grep -q sim-client-secret "$HOME_DIR/dingtalk.yaml"; then
    fail "the literal secret is in the config file"
fi

expect 0 clawdbot daemon start --name dingtalk-bot --log "$HOME_DIR/logs/dingtalk-bot.log"
expect 0 clawdbot send --name dingtalk-bot --to "test-group" --text "ping"

# The outbox holds the ping, sent by group_send to the alias' conversation.
OUTBOX=$(clawdbot --json sim outbox --sim "$SIM" --wait 1 --timeout 10)
echo "$OUTBOX" | grep -q '"text": "ping"' || fail "the outbox has no \"ping\": $OUTBOX"
echo "$OUTBOX" | grep -q '"route": "group_send"' || fail "ping not sent by group_send: $OUTBOX"
echo "$OUTBOX" | grep -q 'cidSmokeGroup==' || fail "ping not sent to test-group: $OUTBOX"

# The stream connection is live before the healthcheck judges the channel.
wait_for 15 "the bot never connected to the simulator's stream" \
    sh -c "\"$CLAWDBOT_BIN\" --json daemon status --name dingtalk-bot | grep -q '\"connected\"'"
expect 0 clawdbot healthcheck --name dingtalk-bot

expect 0 clawdbot daemon status --name dingtalk-bot
expect 0 clawdbot daemon stop --name dingtalk-bot
expect 3 clawdbot daemon status --name dingtalk-bot
expect 3 clawdbot send --name dingtalk-bot --to "test-group" --text "ping"
expect 3 clawdbot healthcheck --name dingtalk-bot

if grep -rq 'sim-client-secret' "$HOME_DIR/logs" 2>/dev/null; then
    fail "the client secret is in a log"
fi
echo "smoke: PASS" >&2
