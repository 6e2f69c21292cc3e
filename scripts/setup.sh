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
# A C++ compiler and CMake build Anvyl's CPU kernel (kernels/) into the venv and the image.
command -v c++ >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
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
# Anvyl's CPU kernel, an MLX extension built against the venv's MLX (the model server runs
# without it, only slower): rebuilt when its sources change.
kernel_stamp="$VENV/.anvyl-kernels-installed"
kernel_hash="$(cat "$ANVYL_ROOT"/kernels/{CMakeLists.txt,pyproject.toml,setup.py} \
    "$ANVYL_ROOT"/kernels/src/* "$ANVYL_ROOT"/kernels/anvyl_kernels/*.py | sha256sum | cut -c1-16)"
if [[ "$(cat "$kernel_stamp" 2>/dev/null)" != "$kernel_hash" ]]; then
    say "building Anvyl's CPU kernel (kernels/) into $VENV"
    nanobind_pin="$(grep -o 'nanobind==[0-9.]*' "$ANVYL_ROOT/kernels/pyproject.toml")"
    if "$VENV/bin/pip" install -q "$nanobind_pin" \
        && "$VENV/bin/pip" install -q --no-build-isolation --no-deps "$ANVYL_ROOT/kernels"; then
        echo "$kernel_hash" >"$kernel_stamp"
    else
        say "the CPU kernel did not build; the model server will run without it"
    fi
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
