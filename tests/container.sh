#!/usr/bin/env bash
# Container test: builds the image from ./Containerfile with podman and runs the bot from it
# (`daemon run`, as the image's entrypoint) against the DingTalk simulator on the host's
# loopback (host networking), then checks that a reply arrives, that the logs are in
# `podman logs`, that the process runs as non-root with its state in the volume, and that
# the HEALTHCHECK (liveness) passes.
#
#   CLAWDBOT_BIN=target/release/clawdbot bash tests/container.sh
#
# Needs podman and the base image `docker.io/library/debian:bookworm-slim` (no registry is
# reachable here: .ci/run makes it from Debian's packages with mmdebstrap). The
# binary (default target/release/clawdbot) is copied into a throw-away build context with
# its debug info stripped. Installs nothing.
# Exit 0 pass, 1 fail, 77 skipped (podman or the base image missing).
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP=77
BASE=docker.io/library/debian:bookworm-slim
if ! command -v podman >/dev/null 2>&1; then
    echo "container: SKIP: podman is not installed (.ci/run installs it)" >&2
    exit $SKIP
fi
if ! podman image exists "$BASE"; then
    echo "container: SKIP: no base image $BASE (.ci/run builds it with mmdebstrap)" >&2
    exit $SKIP
fi
BIN=$(realpath "${CLAWDBOT_BIN:-target/release/clawdbot}")
[ -x "$BIN" ] || { echo "container: FAIL: no binary at $BIN" >&2; exit 1; }

RUN_ID="cbtest-$$"
IMAGE="localhost/clawdbot:$RUN_ID"
WORK=$(mktemp -d /tmp/clawdbot-container.XXXXXX)
SIM_PID=""
started=$SECONDS

cleanup() {
    local rc=$?
    set +e
    podman rm -f -t 5 "$RUN_ID" >/dev/null 2>&1
    podman volume rm -f "$RUN_ID" >/dev/null 2>&1
    podman rmi -f "$IMAGE" >/dev/null 2>&1
    if [ -n "$SIM_PID" ]; then
        kill "$SIM_PID" 2>/dev/null
        wait "$SIM_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

fail() {
    echo "container: FAIL: $*" >&2
    echo "--- podman logs $RUN_ID" >&2
    podman logs "$RUN_ID" 2>&1 | tail -n 30 >&2 || true
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s, bounded.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what (waited ${secs}s)"
        sleep 0.2
    done
}

# 1. The image, from a context holding only the Containerfile's input.
mkdir -p "$WORK/context/target/release"
# A debug build carries ~150 MB of debug info the image does not need.
objcopy --strip-debug "$BIN" "$WORK/context/target/release/clawdbot" 2>/dev/null \
    || cp "$BIN" "$WORK/context/target/release/clawdbot"
cp Containerfile .dockerignore "$WORK/context/"
t0=$SECONDS
podman build --pull=never --network host --format docker -q -t "$IMAGE" \
    -f Containerfile "$WORK/context" >/dev/null || fail "podman build"
echo "container: built $IMAGE in $((SECONDS - t0)) s, $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes" >&2
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] \
    || fail "the image does not run as uid 10001"
podman image inspect -f '{{json .Config.Volumes}}' "$IMAGE" | grep -q /var/lib/clawdbot \
    || fail "no VOLUME /var/lib/clawdbot"
podman image inspect -f '{{json .Config.Env}}' "$IMAGE" | grep -q '"container=oci"' \
    || fail "the image does not declare container=oci"

# 2. The simulator on the host (it also serves an echo model at $SIM/demo/v1).
"$BIN" sim serve --port-file "$WORK/sim.url" >"$WORK/sim.out" 2>&1 &
SIM_PID=$!
wait_for 15 "the simulator did not write its port file" test -s "$WORK/sim.url"
SIM=$(cat "$WORK/sim.url")

# 3. A config made by onboard; the secret stays in the environment.
export DINGTALK_APP_SECRET=sim-client-secret
CLAWDBOT_HOME="$WORK/host-home" "$BIN" onboard --channel dingtalk --config "$WORK/dingtalk.yaml" \
    --non-interactive --client-id dingsimclient --client-secret-env DINGTALK_APP_SECRET \
    --api-base "$SIM" --model-base-url "$SIM/demo/v1" --model local-chat \
    >/dev/null 2>&1 || fail "onboard"
chmod 0644 "$WORK/dingtalk.yaml" # read by uid 10001; it holds ${DINGTALK_APP_SECRET}, not the secret

# 4. The bot from the image: its default command, state in a fresh named volume, under a
# daemon name other than the default (CLAWDBOT_NAME names it for the run and HEALTHCHECK).
BOT_NAME=ct-bot
podman run -d --name "$RUN_ID" --network host -e CLAWDBOT_NAME="$BOT_NAME" \
    -v "$WORK/dingtalk.yaml:/etc/clawdbot/dingtalk.yaml:ro" \
    -v "$RUN_ID:/var/lib/clawdbot" \
    -e DINGTALK_APP_SECRET -e LOCAL_MODEL_API_KEY=none \
    "$IMAGE" >"$WORK/podman-run.out" 2>&1 || fail "podman run: $(cat "$WORK/podman-run.out")"
wait_for 30 "the bot never connected to the simulator's stream" \
    sh -c "podman exec $RUN_ID clawdbot --json daemon status --name $BOT_NAME | grep -q '\"connected\"'"

# 5. A message from a simulated user gets the (echo) model's answer.
"$BIN" sim inject --sim "$SIM" --text "hello from the container test" >/dev/null \
    || fail "sim inject"
OUTBOX=$("$BIN" --json sim outbox --sim "$SIM" --wait 1 --timeout 20) || fail "no reply: $OUTBOX"
echo "$OUTBOX" | grep -q "hello from the container test" || fail "the reply is not the answer: $OUTBOX"
echo "container: a reply arrived: $(echo "$OUTBOX" | grep -o "\"text\": \"[^\"]*\"" | head -n 1)" >&2

# 6. Liveness healthcheck, non-root, state in the volume, logs in `podman logs`.
podman healthcheck run "$RUN_ID" >/dev/null 2>&1 || fail "the HEALTHCHECK failed"
[ "$(podman exec "$RUN_ID" id -u)" = 10001 ] || fail "the daemon does not run as uid 10001"
podman exec "$RUN_ID" sh -c "test -S /var/lib/clawdbot/run/$BOT_NAME/control.sock" \
    || fail "no control socket in the volume"
[ "$(podman exec "$RUN_ID" stat -c '%u %a' "/var/lib/clawdbot/run/$BOT_NAME")" = "10001 700" ] \
    || fail "the run folder is not private to uid 10001"
LOGS=$(podman logs "$RUN_ID" 2>&1)
echo "$LOGS" | grep -q "stderr (container)" || fail "the log does not say it goes to stderr"
echo "$LOGS" | grep -q "open-file limit" || fail "no daemon log lines in podman logs"
if echo "$LOGS" | grep -q "sim-client-secret\|hello from the container"; then
    fail "the secret or the message text is in the log"
fi
if podman exec "$RUN_ID" sh -c 'ls /var/lib/clawdbot/logs 2>/dev/null | grep -q .'; then
    fail "a log file was written in the container"
fi
LOGS_CMD=$(podman exec "$RUN_ID" clawdbot daemon logs --name $BOT_NAME 2>&1) && fail "daemon logs exited 0"
echo "$LOGS_CMD" | grep -q "podman logs" || fail "daemon logs does not say where the logs are: $LOGS_CMD"

# 7. Liveness does not depend on the model (nor the channel): with the simulator and its
# model gone, `clawdbot healthcheck` fails but the image's HEALTHCHECK still passes.
kill "$SIM_PID" && wait "$SIM_PID" 2>/dev/null || true
SIM_PID=""
wait_for 20 "clawdbot healthcheck still passes with the model gone" \
    sh -c "! podman exec $RUN_ID clawdbot healthcheck --name $BOT_NAME"
podman healthcheck run "$RUN_ID" >/dev/null 2>&1 || fail "the HEALTHCHECK depends on the model"

# 8. `podman stop` (SIGTERM) drains and exits 0.
podman stop -t 30 "$RUN_ID" >/dev/null 2>&1 || fail "podman stop"
[ "$(podman inspect -f '{{.State.ExitCode}}' "$RUN_ID")" = 0 ] || fail "the daemon did not exit 0 on SIGTERM"
podman logs "$RUN_ID" 2>&1 | grep -q "daemon stopped" || fail "no 'daemon stopped' line"

# 9. The compose templates (one bot; three replicas on Redis), when docker-compose (1.29,
# Debian's) is here to validate them: valid with the credentials set, refused naming the
# variable without them.
for COMPOSE in config-templates/docker-compose.yml config-templates/docker-compose.replicas.yml; do
if command -v docker-compose >/dev/null 2>&1; then
    DINGTALK_CLIENT_ID=x DINGTALK_CLIENT_SECRET=y docker-compose -f "$COMPOSE" config -q \
        || fail "docker-compose config rejects $COMPOSE"
    if NOCRED=$(env -u DINGTALK_CLIENT_ID -u DINGTALK_CLIENT_SECRET \
        docker-compose -f "$COMPOSE" config -q 2>&1); then
        fail "$COMPOSE is accepted without DINGTALK_CLIENT_ID"
    fi
    echo "$NOCRED" | grep -q "set DINGTALK_CLIENT_" || fail "no clear message: $NOCRED"
    echo "container: $COMPOSE validated by docker-compose" >&2
else
    echo "container: docker-compose absent: $COMPOSE not validated" >&2
fi
done

echo "container: PASS in $((SECONDS - started)) s" >&2
