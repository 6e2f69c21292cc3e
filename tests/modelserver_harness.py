"""A real model server in a subprocess, started from the CLI exactly as the image starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

MODEL_ID = "smollm2-test"


@dataclass
class RunningServer:
    """A model server process and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    health_port: int
    api_key: str | None
    log: Path

    @property
    def url(self) -> str:
        """Base URL of the API port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        """`/health` on the health port."""
        return f"http://127.0.0.1:{self.health_port}/health"

    def headers(self) -> dict[str, str]:
        """The Authorization header, when the server has a key."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def metrics(self) -> dict[str, float]:
        """Every sample of `/metrics`, keyed `name{label="v",...}`."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers(), timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def log_text(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace")

    def health(self) -> int:
        """The status `/health` on the health port answers now."""
        return httpx.get(self.health_url, timeout=5).status_code

    def stop(self) -> int:
        """SIGTERM the server (SIGKILL if it hangs); its exit code."""
        return stop_server(self)


def start_server(
    model_dir: Path, log: Path, *args: str, api_key: str | None = None
) -> RunningServer:
    """Start `python -m anvyl.modelserver` on free ports and wait until it serves."""
    port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVYL_")}
    if api_key:
        env["ANVYL_API_KEY"] = api_key
    cmd = [sys.executable, "-m", "anvyl.modelserver", "--model", str(model_dir)]
    cmd += ["--model-id", MODEL_ID, "--port", str(port), "--health-port", str(health_port)]
    with log.open("wb") as out:
        process = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, port, health_port, api_key, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{server.log_text()}")
        return httpx.get(server.health_url, timeout=2).status_code == 200

    try:
        wait_for(ready, timeout=120, interval=0.1, what="the model server to be ready")
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: RunningServer) -> int:
    """SIGTERM the server and return its exit code (SIGKILL if it hangs)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            return server.process.wait()
    return server.process.returncode
