#!/usr/bin/env bash
# Shared set-up for the README's two commands. Source it; it is idempotent.
#  - installs the Debian packages Anvyl needs on this machine kind (when missing)
#  - creates .venv with the package and its dev/mlx extras
#  - starts a Docker engine in the background when none answers, and registers
#    a trap that stops it again when the calling script exits
set -euo pipefail

ANVYL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ANVYL_VENV:-$ANVYL_ROOT/.venv}"
ENGINE_LOG="${TMPDIR:-/tmp}/anvyl-dockerd.log"
STARTED_ENGINE_PID=""

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v ps >/dev/null 2>&1 || need_pkgs+=(procps)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)  # the dashboard's browser tests
# MLX on the CPU is ~30x faster with OpenBLAS than with the reference BLAS its wheel bundles.
compgen -G "/usr/lib/*/openblas-pthread/libblas.so.3" >/dev/null || need_pkgs+=(libopenblas0-pthread)
if ((${#need_pkgs[@]})); then
    say "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.anvyl-installed"
if [[ ! -f "$stamp" || "$ANVYL_ROOT/pyproject.toml" -nt "$stamp" ]]; then
    say "installing anvyl and its dependencies into $VENV"
    "$VENV/bin/pip" install -q -e "$ANVYL_ROOT[dev]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

engine_up() { "$VENV/bin/python" -c 'import docker; docker.from_env(timeout=3).ping()' >/dev/null 2>&1; }

stop_started_engine() {
    if [[ -n "$STARTED_ENGINE_PID" ]] && kill -0 "$STARTED_ENGINE_PID" 2>/dev/null; then
        say "stopping the Docker engine this script started (pid $STARTED_ENGINE_PID)"
        kill "$STARTED_ENGINE_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$STARTED_ENGINE_PID" 2>/dev/null || break; sleep 0.1; done
    fi
}

if ! engine_up; then
    say "no Docker engine answers: starting dockerd in the background (log: $ENGINE_LOG)"
    dockerd >"$ENGINE_LOG" 2>&1 &
    STARTED_ENGINE_PID=$!
    trap stop_started_engine EXIT
    for _ in $(seq 1 300); do engine_up && break; sleep 0.1; done
    engine_up || { say "dockerd did not come up; see $ENGINE_LOG"; exit 1; }
fi
