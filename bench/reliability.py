"""Reliability report: load and fault scenarios against a real `anvyl serve` and model container.

Scenarios (each bounded; traffic only to loopback and to a private engine this script makes):

- 64 streaming clients (official `openai` SDK) against a model with a small queue;
- 100 clients hanging up mid-stream, in waves;
- requests in flight while `anvyl serve` is `kill -9`ed and restarted (the data plane lives on);
- `kill -9` of `anvyl serve` at each step of `model start` (the `ANVYL_TEST_PAUSE_AT` test hook);
- the model container SIGKILLed twice with `--restart on-failure:1` (back once, then reported);
- the Docker engine restarted under a running model (a private dockerd; needs root).

Columns: requests or faults injected, completed (correctly, or recovered/agreed for faults),
rejected with 429 (with Retry-After), 5xx, lost. The goal is "lost: 0, 5xx: 0" everywhere.
It reuses the test-suite's harness (tests/ and tests/reliability/ are put on sys.path) so the
report measures exactly what the tests check. Prints a table and saves JSON under bench/results/.
Usage: `python bench/reliability.py [--skip-engine]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability")]

import docker  # noqa: E402
from _results import save  # noqa: E402
from fixtures_control_plane import ANVYL, Served  # noqa: E402
from helpers import free_port, imaging_cache_dir, test_cache_dir, wait_for  # noqa: E402
from reliability_harness import (  # noqa: E402
    MODEL_ID,
    deployments,
    make_home,
    serve_models,
    start_model,
)
from scenarios import Tally, disconnect_waves, streaming_load  # noqa: E402

LABEL = "anvyl.bench"


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Raise with the CLI's error when it failed."""
    if result.returncode != 0:
        raise RuntimeError(f"{result.args}: {result.stderr.strip()}")
    return result


def answers(port: int) -> bool:
    """The model at `port` completes a short chat request."""
    import httpx

    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
    return reply.status_code == 200


@contextlib.contextmanager
def server(home: Path, labels: dict[str, str], **env: str) -> Iterator[Served]:
    """`anvyl serve` for one scenario; its deployments stopped and itself stopped after."""
    served = serve_models(home, labels, **env)
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            with contextlib.suppress(Exception):
                for d in deployments(served):
                    served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60)
        served.stop()


def load_scenarios(home: Path, labels: dict[str, str]) -> list[Tally]:
    """The two load scenarios on one model container with a queue of 4."""
    port = free_port()
    with server(home, labels) as served:
        checked(start_model(served, MODEL_ID, "--port", str(port), "--max-queue", "4"))
        url = f"http://127.0.0.1:{port}"
        asyncio.run(streaming_load(url, MODEL_ID, clients=16))  # warm-up
        load = asyncio.run(streaming_load(url, MODEL_ID, clients=64))
        hangups = asyncio.run(disconnect_waves(url, MODEL_ID, waves=5, per_wave=20))
    return [load, hangups]


def control_plane_killed_under_load(home: Path, labels: dict[str, str]) -> Tally:
    """Requests in flight while `anvyl serve` is killed with SIGKILL and started again."""
    port = free_port()
    with server(home, labels) as first:
        checked(start_model(first, MODEL_ID, "--port", str(port)))
        url = f"http://127.0.0.1:{port}"

        async def run() -> Tally:
            task = asyncio.create_task(
                streaming_load(url, MODEL_ID, clients=32, scenario="32 clients, serve kill -9")
            )
            await asyncio.sleep(0.2)
            first.stop(signal.SIGKILL)
            return await task

        tally = asyncio.run(run())
        with server(home, labels) as second:
            if not (deployments(second) and answers(port)):
                tally.lost += 1
                tally.note("the model was not listed or did not answer after the restart")
    return tally


def kill_during_start(root: Path, bundled: Path, labels: dict[str, str]) -> Tally:
    """`kill -9` of `anvyl serve` before create, after create, while loading."""
    client = docker.from_env()
    tally = Tally("serve kill -9 during start (3 steps)")
    for step in ("before-create", "after-create", "loading"):
        tally.injected += 1
        home = make_home(root / f"kill-{step}", bundled)
        with server(home, labels, ANVYL_TEST_PAUSE_AT=step) as first:
            starter = subprocess.Popen(
                [ANVYL, "model", "start", MODEL_ID, "--port", str(free_port())],
                env={**os.environ, "ANVYL_ADDR": first.address},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda h=home, s=step: (h / f"test-paused-{s}").exists(), timeout=180)
            first.stop(signal.SIGKILL)
            starter.kill()
            starter.wait()
        with server(home, labels) as second:
            controller = (home / "controller-id").read_text().strip()
            made = client.containers.list(
                all=True, filters={"label": [f"anvyl.controller={controller}"]}
            )
            listed = deployments(second)
            if {d["container_id"] for d in listed} == {c.id for c in made}:
                tally.completed += 1
            else:
                tally.lost += 1
                tally.note(f"{step}: store {listed} vs engine {[c.id for c in made]}")
    client.close()
    return tally


def crash_loop(home: Path, labels: dict[str, str]) -> Tally:
    """Two SIGKILLs of the model with on-failure:1: back after one, reported after two."""
    client = docker.from_env()
    tally = Tally("model SIGKILL, on-failure:1 (2 kills)", injected=2)
    with server(home, labels) as served:
        checked(start_model(served, MODEL_ID, "--port", str(port := free_port()), "--restart",
                            "on-failure:1"))  # fmt: skip
        (d,) = deployments(served)

        def kill() -> None:
            pid = client.api.inspect_container(d["container_id"])["State"]["Pid"]
            os.kill(pid, signal.SIGKILL)

        kill()
        wait_for(lambda: deployments(served)[0]["state"] == "ready" and answers(port), timeout=180)
        tally.completed += 1
        kill()
        state: Callable[[], dict] = lambda: deployments(served)[0]  # noqa: E731
        wait_for(lambda: state()["state"] == "exited", timeout=60)
        if "crash loop" in state()["state_reason"]:
            tally.completed += 1
        else:
            tally.lost += 1
            tally.note(f"not reported as a crash loop: {state()['state_reason']}")
    client.close()
    return tally


def engine_restart(root: Path, bundled: Path, labels: dict[str, str], image: str) -> Tally:
    """The private engine stopped and started under a running model."""
    from private_engine import copy_image, private_engine

    tally = Tally("docker engine restart", injected=1)
    with private_engine(Path("/tmp") / f"anvt-{uuid.uuid4().hex[:6]}") as engine:
        copy_image(docker.from_env(), engine.client(), image)
        home = make_home(root / "engine", bundled)
        with server(home, labels, DOCKER_HOST=engine.url) as served:
            checked(start_model(served, MODEL_ID, "--port", str(free_port())))
            engine.stop()
            during = deployments(served)[0]["state"]
            engine.start()
            (after,) = wait_for(
                lambda: [d for d in deployments(served) if d["state"] != "unknown"], timeout=60
            )
            running = engine.client().api.inspect_container(after["container_id"])["State"]
            agree = after["state"] == "exited" if not running["Running"] else True
            if during == "unknown" and agree:
                tally.completed += 1
            else:
                tally.lost += 1
                tally.note(f"during={during} after={after['state']} engine={running['Status']}")
    return tally


def print_table(rows: list[Tally]) -> None:
    """The report's one table."""
    headers = ("scenario", "injected", "completed", "429", "5xx", "lost")
    data = [[str(r.row()[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in data)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in data:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in rows:
        for note in r.notes:
            print(f"  {r.scenario}: {note}")


def main() -> int:
    """Run every scenario, print the table, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-engine", action="store_true", help="skip the engine restart")
    args = parser.parse_args()

    from anvyl.catalog.bundled import ensure_bundled_model
    from anvyl.imaging import DEBIAN_BOOTSTRAP
    from anvyl.runtime.images import ensure_image

    run = uuid.uuid4().hex[:8]
    labels = {LABEL: run}
    bundled = ensure_bundled_model(test_cache_dir() / "home")
    client = docker.from_env()
    image = ensure_image(client, cache_dir=imaging_cache_dir(), base_image=DEBIAN_BOOTSTRAP)
    rows: list[Tally] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anvyl-reliability-") as tmp:
        root = Path(tmp)
        try:
            rows += load_scenarios(make_home(root / "load", bundled), labels)
            rows.append(control_plane_killed_under_load(make_home(root / "cp", bundled), labels))
            rows.append(kill_during_start(root, bundled, labels))
            rows.append(crash_loop(make_home(root / "crash", bundled), labels))
            if not args.skip_engine:
                rows.append(engine_restart(root, bundled, labels, image))
        finally:
            for c in client.containers.list(all=True, filters={"label": f"{LABEL}={run}"}):
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True, v=True)
    print_table(rows)
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "rows": [{**r.row(), "health_failures": r.health_failures, "notes": r.notes} for r in rows],
    }
    save("reliability", report)
    return 0 if all(r.lost == 0 and r.server_errors == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
