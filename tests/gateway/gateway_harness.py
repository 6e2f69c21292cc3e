"""Helpers of the gateway tests: a real `anvyl serve` with its gateway on a free port.

The server's home links the bundled model; every model container it makes carries the run's
`anvyl.test=<run id>` label (through `ANVYL_LABELS`), so the session fixture removes whatever a
failing test leaves behind.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from fixtures_control_plane import Served, start_serve
from helpers import free_port

MODEL_ID = "smollm2-135m-instruct-mlx"
START_TIMEOUT_S = 240.0


@dataclass
class GatewayServed:
    """`anvyl serve` and the URL of its gateway."""

    served: Served
    gateway_port: int

    @property
    def url(self) -> str:
        """The gateway's base URL (no `/v1`)."""
        return f"http://127.0.0.1:{self.gateway_port}"


def make_home(root: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME whose models/ links the bundled model (no copy)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    link = root / "models" / bundled_model.name
    if not link.exists():
        link.symlink_to(bundled_model.resolve(), target_is_directory=True)
    return root


def serve_gateway(home: Path, run_labels: dict[str, str], *args: str) -> GatewayServed:
    """`anvyl serve` with its gateway on a free port, labelling what it creates."""
    port = free_port()
    labels = ",".join(f"{k}={v}" for k, v in run_labels.items())
    served = start_serve(
        home,
        args=["--gateway-port", str(port), "--dashboard-port", "0", *args],
        env={"ANVYL_LABELS": labels},
    )
    return GatewayServed(served, port)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a CLI call succeeded; return it."""
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def start_models(served: Served, *arg_lists: list[str]) -> None:
    """`anvyl model start` for each argument list, in parallel (each waits until ready)."""

    def start(args: list[str]) -> subprocess.CompletedProcess[str]:
        return served.cli("model", "start", MODEL_ID, *args, timeout=START_TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=len(arg_lists)) as pool:
        for result in pool.map(start, arg_lists):
            ok(result)


def deployments(served: Served) -> list[dict[str, Any]]:
    """`anvyl model ps -o json`."""
    return json.loads(ok(served.cli("model", "ps", "-o", "json")).stdout)["deployments"]


def stop_all(served: Served) -> None:
    """Stop every deployment the server knows."""
    for d in deployments(served):
        served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60)


def container_of(client: docker.DockerClient, deployment: str) -> Any:
    """The container of a deployment, by its name."""
    return client.containers.get(deployment)
