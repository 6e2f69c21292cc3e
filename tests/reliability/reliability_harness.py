"""Helpers of the reliability tests: a real `anvyl serve` on a home holding the bundled model.

Everything a test server creates carries the run's `anvyl.test=<run id>` label (through
`ANVYL_LABELS`), so the session fixture removes whatever a failing test leaves behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import free_port, wait_for
from models_harness import (
    MODEL_ID,
    SERVICE_LABEL,
    START_TIMEOUT_S,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    serve_models,
    start_model,
    stop_all,
)

__all__ = [
    "MODEL_ID",
    "SERVICE_LABEL",
    "START_TIMEOUT_S",
    "ModelServer",
    "deployments",
    "failed",
    "make_home",
    "model_containers",
    "ok",
    "serve_models",
    "start_model",
    "start_model_server",
    "stop_all",
]


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
