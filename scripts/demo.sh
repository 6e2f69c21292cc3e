#!/usr/bin/env bash
# The README's main job, on a fresh machine: install what is missing, start a Docker engine if
# none runs, build the model-server image, start `anvyl serve`, import the bundled SmolLM2 model,
# start it in a container, ask it a question with the official `openai` SDK (answer + tokens/s),
# then stop the model (and the server and engine this script started).
#
# Environment: ANVYL_HOME (default ~/.anvyl), ANVYL_DEMO_PORT (model port, default 1234),
# ANVYL_DEMO_SERVER_PORT (control plane, default 50051),
# ANVYL_BASE_IMAGE (default debian-bootstrap: no registry is needed; python:3.12-slim works too).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ANVYL_ROOT"

MODEL_ID=smollm2-135m-instruct-mlx
MODEL_PORT="${ANVYL_DEMO_PORT:-1234}"
SERVER_PORT="${ANVYL_DEMO_SERVER_PORT:-50051}"
export ANVYL_ADDR="localhost:$SERVER_PORT"
export ANVYL_BASE_IMAGE="${ANVYL_BASE_IMAGE:-debian-bootstrap}"
SERVER_PID=""
DEPLOYMENT=""

cleanup() {
    local rc=$?
    if [[ -n "$DEPLOYMENT" ]]; then
        say "stopping the model"
        anvyl model stop "$DEPLOYMENT" || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        say "stopping anvyl serve (pid $SERVER_PID)"
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    stop_started_engine
    exit "$rc"
}
trap cleanup EXIT

if anvyl host list >/dev/null 2>&1; then
    say "using the anvyl server already running at $ANVYL_ADDR"
else
    say "starting anvyl serve on $ANVYL_ADDR"
    anvyl serve --port "$SERVER_PORT" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do anvyl host list >/dev/null 2>&1 && break; sleep 0.1; done
    anvyl host list
fi

# Through the server (the CLI never dials the engine itself).
say "building the model-server image (skipped when up to date)"
anvyl image build --base-image "$ANVYL_BASE_IMAGE"

say "importing the bundled model (once)"
anvyl model import --bundled smollm2
anvyl model list

say "starting $MODEL_ID on port $MODEL_PORT"
DEPLOYMENT="demo-$MODEL_ID"
anvyl model start "$MODEL_ID" --name "$DEPLOYMENT" --port "$MODEL_PORT" --memory 2g \
    || { DEPLOYMENT=""; exit 1; }
anvyl model ps

say "asking it a question with the openai SDK"
python examples/chat.py --base-url "http://localhost:$MODEL_PORT/v1" --model "$MODEL_ID"
