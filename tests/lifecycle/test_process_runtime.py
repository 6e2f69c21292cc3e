"""The process runtime: the model server as a supervised local process, no container.

A real `anvyl serve --runtime process`, the real bundled model and real model-server processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import docker
import httpx
import psutil
from fixtures_control_plane import ANVYL, Served
from helpers import free_port, wait_for
from models_harness import (
    MODEL_ID,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    serve_models,
    start_model,
    stop_all,
)

from anvyl.runtime.cgroup import Cgroups

PROCESS = ("--runtime", "process")


def answers(port: int, key: str = "") -> bool:
    """The model at `port` completes a short chat request."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    reply = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers, timeout=60
    )
    return reply.status_code == 200 and bool(reply.json()["choices"])


def pid_of(deployment: dict[str, object]) -> int:
    """The supervisor's pid from `pid:N`."""
    ref = str(deployment["container_id"])
    assert ref.startswith("pid:"), ref
    return int(ref.removeprefix("pid:"))


def test_start_ps_logs_stop(
    procs: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> None:
    port = free_port()
    started = ok(
        start_model(procs, MODEL_ID, "-n", "native", "-p", str(port), "-m", "2g", "--api-key", "k1",
                    "--allow-origin", "https://app.example")
    )  # fmt: skip
    assert "process" in started.stdout
    (d,) = deployments(procs)
    assert d["runtime"] == "process" and d["state"] == "ready" and d["bind"] == "127.0.0.1"
    pid = pid_of(d)
    assert os.getpgid(pid) == pid  # its own process group
    assert answers(port, "k1") and not answers(port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    ask = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(url, headers={"Origin": "https://app.example", **ask})
    assert allowed.status_code == 204  # a preflight needs no key
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert httpx.options(url, headers={"Origin": "https://b.example", **ask}).status_code == 403
    key_file = procs.home / "secrets" / d["id"] / "api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "k1" not in " ".join(psutil.Process(pid).cmdline())
    assert model_containers(docker_client, run_labels) == []  # no container exists for it
    ps = ok(procs.cli("model", "ps")).stdout
    assert "native" in ps and "process" in ps and "RUNTIME" in ps

    support = Cgroups().available()
    if support.memory:  # enforced: the limit is the cgroup's
        assert d["memory_limit_bytes"] == 2 << 30
    else:  # reported as not enforced
        assert d["memory_limit_bytes"] is None and "not enforced" in started.stderr

    tail = ok(procs.cli("model", "logs", "native", "--tail", "3")).stdout
    assert 0 < len(tail.splitlines()) <= 3
    follow = subprocess.Popen(
        [ANVYL, "model", "logs", "native", "--follow"],
        env={**os.environ, "ANVYL_ADDR": procs.address, **procs.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # let the follower reach the end of the file before the stop
        stopped = ok(procs.cli("model", "stop", "native", "--timeout", "10"))
        assert "Stopped native" in stopped.stdout
        out, err = follow.communicate(timeout=30)  # a followed log ends with its process
        assert follow.returncode == 0, err
        assert out  # what the model server wrote
    finally:
        follow.kill()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_broken_model_directory_fails_within_seconds(procs: Served) -> None:
    real = procs.home / "models" / MODEL_ID
    broken = procs.home / "models" / "broken-mlx"
    broken.mkdir(exist_ok=True)
    for item in real.resolve().iterdir():
        if item.name != "config.json" and not (broken / item.name).exists():
            (broken / item.name).symlink_to(item)
    config = json.loads((real / "config.json").read_text())
    config["hidden_size"] = 64  # the weights no longer fit: the loader fails
    (broken / "config.json").write_text(json.dumps(config))
    began = time.monotonic()
    result = start_model(procs, "broken-mlx", "-n", "broken", "-p", str(free_port()))
    took = time.monotonic() - began
    assert result.returncode != 0, result.stdout
    err = result.stderr
    for text in ("broken failed while loading", "exited with code 1", "last log lines"):
        assert text in err, err
    assert "Expected shape" in err  # the model server's own last lines (its traceback)
    assert took < 60, f"{took:.1f} s"
    assert deployments(procs) == []


def test_options_it_cannot_honour_are_refused(procs: Served, tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    port = str(free_port())
    failed(
        start_model(procs, MODEL_ID, "-p", port, "--startup-script", str(script)),
        "--startup-script",
    )
    failed(start_model(procs, MODEL_ID, "-p", port, "--replicas", "2"), "--replicas")
    failed(start_model(procs, MODEL_ID, "-p", port, "--runtime", "vm"), "--runtime")
    if not Cgroups().available().cpu:
        failed(start_model(procs, MODEL_ID, "-p", port, "--cpus", "1"), "--cpus")
    assert deployments(procs) == []


def test_serve_killed_model_survives_and_is_adopted_but_not_a_reused_pid(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    home = make_home(tmp_path / "home", bundled_model)
    port = free_port()
    first = serve_models(home, run_labels, args=PROCESS)
    second: Served | None = None
    stranger: subprocess.Popen[bytes] | None = None
    try:
        ok(start_model(first, MODEL_ID, "-n", "survivor", "-p", str(port)))
        (before,) = deployments(first)
        first.stop(signal.SIGKILL)
        assert answers(port)  # the model outlives its control plane

        second = serve_models(home, run_labels, args=PROCESS)
        (after,) = deployments(second)
        assert after["id"] == before["id"] and after["container_id"] == before["container_id"]
        assert after["state"] == "ready" and after["runtime"] == "process"
        assert ok(second.cli("model", "logs", "survivor", "--tail", "5")).stdout

        # The model dies with serve down; its pid goes to an unrelated process.
        pid = pid_of(after)
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not answers_quietly(port), timeout=30, what="the model to die")
        stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
        with sqlite3.connect(next(home.glob("*.db"))) as db:
            (raw,) = db.execute("SELECT options FROM deployments").fetchone()
            options = json.loads(raw)
            options["handle"]["pid"] = stranger.pid
            db.execute("UPDATE deployments SET options = ?", (json.dumps(options),))
        (seen,) = deployments(second)
        assert seen["state"] != "ready", seen  # not mistaken for ours
        ok(second.cli("model", "stop", "survivor", "--timeout", "2"))
        assert stranger.poll() is None  # never signalled
        assert deployments(second) == []
    finally:
        if stranger is not None:
            stranger.kill()
        first.stop()
        if second is not None:
            stop_all(second)
            second.stop()


def answers_quietly(port: int) -> bool:
    """Whether anything answers /health on `port` now."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_restart_policy_restarts_a_crashed_server(procs: Served) -> None:
    port = free_port()
    ok(start_model(procs, MODEL_ID, "-n", "phoenix", "-p", str(port), "--restart", "on-failure:2"))
    (d,) = deployments(procs)
    supervisor = psutil.Process(pid_of(d))
    (server,) = supervisor.children()
    server.kill()  # the model server crashes; its supervisor stays
    again = wait_for(
        lambda: [
            x
            for x in deployments(procs)
            if x["state"] == "ready" and "restarted 1 time" in x["state_reason"]
        ],
        timeout=120,
        what="the supervisor to restart the model server",
    )
    assert again[0]["container_id"] == d["container_id"]
    assert answers(port)


def test_out_of_memory_is_reported_or_the_limit_said_unenforced(procs: Served) -> None:
    result = start_model(
        procs, MODEL_ID, "-n", "tiny", "-m", "64m", "--force", "-p", str(free_port())
    )
    if Cgroups().available().memory:  # enforced: the kernel kills it while loading
        assert result.returncode != 0, result.stdout
        assert "tiny failed while loading: out of memory" in result.stderr, result.stderr
        assert deployments(procs) == []
    else:
        assert "not enforced" in ok(result).stderr
