"""Faults injected around a running or starting model: killed servers, crashing containers, disks.

- `kill -9` of `anvyl serve` at each step of `model start` (reached deterministically through the
  `ANVYL_TEST_PAUSE_AT` test hook): after a restart the store and the engine agree, and SQLite's
  integrity check passes.
- A model container SIGKILLed: `model ps` shows it exited with the reason; with
  `--restart on-failure:1` the engine brings it back once, and the second crash is reported as a
  crash loop the engine gave up on. A start that fails is cleaned up, never restarted.
- `ANVYL_HOME` read-only or its disk full: a clear error, and the running model untouched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from fixtures_control_plane import ANVYL, Served
from helpers import free_port, wait_for
from models_harness import (
    MODEL_ID,
    START_TIMEOUT_S,
    Servers,
    deployments,
    failed,
    make_home,
    ok,
    start_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.model]

STEPS = ("before-create", "after-create", "loading")


def answers(port: int) -> bool:
    """The model at `port` completes a short chat request."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
    return reply.status_code == 200 and bool(reply.json()["choices"])


def integrity(home: Path) -> str:
    """`PRAGMA integrity_check` of the home's database."""
    with contextlib.closing(sqlite3.connect(home / "anvyl.db")) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def home_containers(client: docker.DockerClient, home: Path) -> list[Any]:
    """Model containers this home's control plane made (by its controller id)."""
    controller = (home / "controller-id").read_text().strip()
    flt = {"label": [f"anvyl.controller={controller}"]}
    return client.containers.list(all=True, filters=flt)


# -- kill -9 of the control plane during a start --------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_kill_serve_during_start(
    step: str, fresh_home: Path, servers: Servers, docker_client: docker.DockerClient
) -> None:
    home = fresh_home
    port = free_port()
    first = servers.start(home, ANVYL_TEST_PAUSE_AT=step)
    starter = subprocess.Popen(
        [ANVYL, "model", "start", MODEL_ID, "--name", "killed", "--port", str(port)],
        env={**os.environ, "ANVYL_ADDR": first.address},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (home / f"test-paused-{step}").exists(),
            timeout=START_TIMEOUT_S,
            what=f"the start to pause at {step}",
        )
        first.stop(signal.SIGKILL)
    finally:
        starter.kill()
        starter.wait()
    assert integrity(home) == "ok"

    second = servers.start(home)
    listed = deployments(second)
    made = home_containers(docker_client, home)
    # The store and the engine agree: one deployment with its container, or neither.
    assert {d["container_id"] for d in listed} == {c.id for c in made}, (listed, made)
    if step == "before-create":
        assert listed == []
    else:
        (deployment,) = listed
        assert deployment["state"] in ("starting", "ready"), deployment
        wait_for(
            lambda: deployments(second)[0]["state"] == "ready",
            timeout=START_TIMEOUT_S,
            what="the adopted deployment to be ready",
        )
        assert answers(port)
        ok(second.cli("model", "stop", "killed", "--timeout", "5", timeout=60))
    assert deployments(second) == []
    assert home_containers(docker_client, home) == []
    assert integrity(home) == "ok"


# -- a crashing model container -------------------------------------------------------------------


def kill_model_process(client: docker.DockerClient, container_id: str) -> None:
    """SIGKILL the container's process from the host, as a crash would (not `docker kill`)."""
    pid = client.api.inspect_container(container_id)["State"]["Pid"]
    assert pid > 0
    os.kill(pid, signal.SIGKILL)


def deployment(served: Served, name: str) -> dict[str, Any]:
    """One deployment of `model ps -o json` by name."""
    return next(d for d in deployments(served) if d["name"] == name)


def test_crash_restart_and_crash_loop(served: Served, docker_client: docker.DockerClient) -> None:
    port = free_port()
    ok(
        start_model(
            served, MODEL_ID, "--name", "crashy", "--port", str(port), "--restart", "on-failure:1"
        )
    )
    container_id = deployment(served, "crashy")["container_id"]
    policy = docker_client.api.inspect_container(container_id)["HostConfig"]["RestartPolicy"]
    assert policy == {"Name": "on-failure", "MaximumRetryCount": 1}

    kill_model_process(docker_client, container_id)
    wait_for(
        lambda: docker_client.api.inspect_container(container_id)["RestartCount"] == 1,
        timeout=60,
        what="the engine to restart the container",
    )
    back = wait_for(
        lambda: (d := deployment(served, "crashy"))["state"] == "ready" and d,
        timeout=START_TIMEOUT_S,
        what="the restarted model to be ready",
    )
    assert "restarted 1 time" in back["state_reason"]
    assert answers(port)

    kill_model_process(docker_client, container_id)
    wait_for(
        lambda: docker_client.api.inspect_container(container_id)["State"]["Status"] == "exited",
        timeout=60,
        what="the container to stay down",
    )
    down = deployment(served, "crashy")
    assert down["state"] == "exited"
    assert "code 137" in down["state_reason"] and "crash loop" in down["state_reason"], down
    ps = ok(served.cli("model", "ps", env={"COLUMNS": "400"}))
    assert "crashy" in ps.stdout and "exited" in ps.stdout and "crash loop" in ps.stdout
    ok(served.cli("model", "stop", "crashy", "--timeout", "5", timeout=60))


def test_failed_start_is_cleaned_up_not_restarted(
    served: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    # Far too little memory: the server is killed while loading, before it was ever ready.
    result = start_model(
        served,
        MODEL_ID,
        "--name",
        "starved",
        "--port",
        str(free_port()),
        "--memory",
        "24m",
        "--force",
        "--restart",
        "on-failure:5",
    )
    failed(result, "starved")
    assert deployments(served) == []
    flt = {"label": [f"{k}={v}" for k, v in run_labels.items()], "name": "starved"}
    assert docker_client.containers.list(all=True, filters=flt) == []
    failed(served.cli("model", "start", MODEL_ID, "--restart", "always", "--detach"), "restart")


# -- ANVYL_HOME read-only or full -----------------------------------------------------------------


@contextlib.contextmanager
def mounted(*args: str, target: Path) -> Iterator[Path]:
    """`mount ARGS TARGET` for the block; unmounted after, even on failure."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *args, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_home_refuses_clearly(tmp_path: Path, fresh_home: Path, servers: Servers) -> None:
    home = fresh_home
    port = free_port()
    first = servers.start(home)
    ok(start_model(first, MODEL_ID, "--name", "steady", "--port", str(port)))
    first.stop()
    with mounted("--bind", str(home), target=tmp_path / "ro") as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        result = subprocess.run(
            [
                ANVYL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--dashboard-port",
                "0",
            ],
            env={**os.environ, "ANVYL_HOME": str(ro)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert answers(port)  # the running model is untouched
    second = servers.start(home)
    assert deployment(second, "steady")["state"] == "ready"


def test_full_disk_refuses_clearly(
    tmp_path: Path,
    bundled_model: Path,
    modelserver_image: str,
    run_labels: dict[str, str],
) -> None:
    with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=tmp_path / "home") as home:
        make_home(home, bundled_model)
        port = free_port()
        with Servers(run_labels) as servers:  # stopped before the tmpfs goes
            served = servers.start(home)
            ok(start_model(served, MODEL_ID, "--name", "steady", "--port", str(port)))
            filler = home / "filler"
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            other = start_model(served, MODEL_ID, "--name", "more", "--port", str(free_port()))
            failed(other)
            assert "internal error" not in other.stderr.lower(), other.stderr
            assert "disk is full" in other.stderr, other.stderr
            assert deployment(served, "steady")["state"] == "ready"
            assert answers(port)
            filler.unlink()
            ok(served.cli("model", "stop", "steady", "--timeout", "5", timeout=60))
            assert deployments(served) == []
