#!/bin/sh
# Entrypoint of Anvyl's model-server image.
#
# STARTUP_SCRIPT: the path of a script to run before the model server starts (the spec's
# "custom startup script"). The control plane mounts it read-only. When the variable is set and
# the file exists, the script runs with `sh FILE` (never eval'd, so the variable is a path and
# not code); if it fails, the container stops with its exit status. When the variable names no
# file, a warning is printed and the server starts anyway. Then the command (by default
# `python -m anvyl.modelserver`) replaces this shell, so the server is PID 1 and gets signals.
set -eu

if [ -n "${STARTUP_SCRIPT:-}" ]; then
    if [ -f "$STARTUP_SCRIPT" ]; then
        echo "anvyl-entrypoint: running STARTUP_SCRIPT $STARTUP_SCRIPT" >&2
        sh "$STARTUP_SCRIPT"
    else
        echo "anvyl-entrypoint: STARTUP_SCRIPT $STARTUP_SCRIPT does not exist; skipped" >&2
    fi
fi

exec "$@"
