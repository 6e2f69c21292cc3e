#!/usr/bin/env bash
# The README's test command: sets up what is missing, then runs lint and the whole test suite
# against a real Docker engine, the real model-server image and the real bundled model.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/cli -x`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ANVYL_ROOT"

say "ruff"
ruff check src tests bench
ruff format --check src tests bench

say "pytest"
pytest "$@"
