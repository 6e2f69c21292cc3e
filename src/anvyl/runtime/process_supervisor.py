"""The supervisor of one process deployment (`python -m anvyl.runtime.process_supervisor`).

Usage: `python -P .../process_supervisor.py DIR -- COMMAND...` (the runtime runs it by path, so
that Python does not import the package `anvyl.runtime`, docker and grpc with it; `python -m
anvyl.runtime.process_supervisor` works too).

It runs the model server as its child (in the process group the runtime made for both),
records why it exited in `DIR/status.json` (so a restarted `anvyl serve` can still say so), and
restarts it on failure when `DIR/restart` holds a policy (written once the model was ready).
SIGTERM is passed on and ends the loop. It outlives `anvyl serve`, as a container outlives
its client. Kept free of heavy imports: it starts before every model server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

STATUS_FILE = "status.json"
RESTART_FILE = "restart"
CGROUP_ENV = "ANVYL_CGROUP_PROCS"
# LD_PRELOAD for the model server only (OpenBLAS: it then needs no re-exec of its own).
CHILD_PRELOAD_ENV = "ANVYL_CHILD_LD_PRELOAD"
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def restart_limit(text: str) -> int | None:
    """Restarts allowed by `on-failure[:N]` (0: unlimited), None for no policy."""
    name, _, count = text.strip().partition(":")
    if name != "on-failure":
        return None
    return int(count) if count.isdigit() else 0


def write_status(run_dir: Path, **status: object) -> None:
    """Atomically replace the status file."""
    tmp = run_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps({**status, "at": time.time()}))
    os.replace(tmp, run_dir / STATUS_FILE)


def supervise(run_dir: Path, command: list[str]) -> int:
    """Run `command` until it exits for good; returns its exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts = 0
    while True:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        write_status(run_dir, state="running", pid=child.pid, restarts=restarts)
        code = child.wait()
        try:
            limit = restart_limit((run_dir / RESTART_FILE).read_text())
        except OSError:
            limit = None
        again = limit is not None and (limit == 0 or restarts < limit)
        if stopping or code == 0 or not again:
            write_status(run_dir, state="exited", code=code, restarts=restarts, stopped=stopping)
            return code
        write_status(run_dir, state="restarting", code=code, restarts=restarts + 1)
        time.sleep(RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S) - 1)])
        restarts += 1
        if stopping:
            write_status(run_dir, state="exited", code=code, restarts=restarts, stopped=True)
            return code


def main(argv: list[str]) -> int:
    """Join the deployment's cgroups, then supervise the command after `--`."""
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m anvyl.runtime.process_supervisor DIR -- COMMAND...", file=sys.stderr
        )
        return 2
    procs = [p for p in os.environ.pop(CGROUP_ENV, "").split(os.pathsep) if p]
    if procs:
        from anvyl.runtime.cgroup import join

        join(procs)
    preload = os.environ.pop(CHILD_PRELOAD_ENV, "")
    if preload:
        os.environ["LD_PRELOAD"] = preload
    code = supervise(Path(argv[0]), argv[2:])
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
