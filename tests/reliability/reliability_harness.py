"""Helpers of the reliability tests: a real `anvyl serve` on a home holding the bundled model.

Everything a test server creates carries the run's `anvyl.test=<run id>` label (through
`ANVYL_LABELS`), so the session fixture removes whatever a failing test leaves behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
from fixtures_control_plane import Served, start_serve
from helpers import free_port, wait_for

MODEL_ID = "smollm2-135m-instruct-mlx"
SERVICE_LABEL = "anvyl.service=lmstudio-model"
START_TIMEOUT_S = 180.0


def make_home(root: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME whose models/ links the bundled model (no copy)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    link = root / "models" / bundled_model.name
    if not link.exists():
        link.symlink_to(bundled_model.resolve(), target_is_directory=True)
    return root


def serve_models(
    home: Path, run_labels: dict[str, str], *, args: tuple[str, ...] = (), **env: str
) -> Served:
    """`anvyl serve` on `home` that labels its model containers with the run's label."""
    labels = ",".join(f"{k}={v}" for k, v in run_labels.items())
    return start_serve(
        home, args=("--dashboard-port", "0", *args), env={"ANVYL_LABELS": labels, **env}
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a CLI call succeeded; return it."""
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def failed(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    """Assert a CLI call failed with one clear error naming every text; return the error."""
    assert result.returncode != 0, f"succeeded unexpectedly:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"
    return result.stderr


def start_model(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    """`anvyl model start <args>` (it waits for the model, hence the long timeout)."""
    return served.cli("model", "start", *args, timeout=START_TIMEOUT_S)


def deployments(served: Served) -> list[dict[str, Any]]:
    """`anvyl model ps -o json`."""
    return json.loads(ok(served.cli("model", "ps", "-o", "json")).stdout)["deployments"]


def stop_all(served: Served) -> None:
    """Stop every deployment the server knows (by deployment id), if it still runs."""
    if served.proc.poll() is not None:
        return
    for d in deployments(served):
        ok(served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60))


def model_containers(client: docker.DockerClient, run_labels: dict[str, str]) -> list[Any]:
    """This run's model containers (running or not)."""
    selectors = [SERVICE_LABEL, *(f"{k}={v}" for k, v in run_labels.items())]
    return client.containers.list(all=True, filters={"label": selectors})


@dataclass
class ModelServer:
    """A real model server (`python -m anvyl.modelserver`) in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    health_port: int
    log: Path

    @property
    def url(self) -> str:
        """Base URL of the API port."""
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> int:
        """The status of `/health` on the health port."""
        return httpx.get(f"http://127.0.0.1:{self.health_port}/health", timeout=5).status_code

    def stop(self) -> int:
        """SIGTERM (SIGKILL if it hangs); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_model_server(model_dir: Path, log: Path, *args: str) -> ModelServer:
    """The model server on free ports with the bundled model; waits until `/health` is 200."""
    port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVYL_")}
    cmd = [sys.executable, "-m", "anvyl.modelserver", "--model", str(model_dir)]
    cmd += ["--model-id", MODEL_ID, "--port", str(port), "--health-port", str(health_port)]
    with log.open("wb") as out:
        process = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ModelServer(process, port, health_port, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the model server exited:\n{log.read_text(errors='replace')}")
        return server.health() == 200

    try:
        wait_for(ready, timeout=180, interval=0.2, what="the model server to be ready")
    except BaseException:
        server.stop()
        raise
    return server
