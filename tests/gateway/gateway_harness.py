"""Helpers of the gateway tests: a real `anvyl serve` with its gateway on a free port.

The server's home links the bundled model; every model container it makes carries the run's
`anvyl.test=<run id>` label (through `ANVYL_LABELS`), so the session fixture removes whatever a
failing test leaves behind.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from fixtures_control_plane import Served
from helpers import free_port
from models_harness import MODEL_ID, deployments, ok, serve_models, start_model

__all__ = [
    "GatewayServed",
    "container_of",
    "serve_gateway",
    "start_models",
    "stop_all",
]


@dataclass
class GatewayServed:
    """`anvyl serve` and the URL of its gateway."""

    served: Served
    gateway_port: int

    @property
    def url(self) -> str:
        """The gateway's base URL (no `/v1`)."""
        return f"http://127.0.0.1:{self.gateway_port}"


def serve_gateway(home: Path, run_labels: dict[str, str], *args: str) -> GatewayServed:
    """`anvyl serve` with its gateway on a free port, labelling what it creates."""
    port = free_port()
    return GatewayServed(
        serve_models(home, run_labels, args=("--gateway-port", str(port), *args)), port
    )


def start_models(served: Served, *arg_lists: list[str]) -> None:
    """`anvyl model start` for each argument list, in parallel (each waits until ready)."""

    def start(args: list[str]) -> subprocess.CompletedProcess[str]:
        return start_model(served, MODEL_ID, *args)

    with ThreadPoolExecutor(max_workers=len(arg_lists)) as pool:
        for result in pool.map(start, arg_lists):
            ok(result)


def stop_all(served: Served) -> None:
    """Stop every deployment the server knows."""
    for d in deployments(served):
        served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60)


def container_of(client: docker.DockerClient, deployment: str) -> Any:
    """The container of a deployment, by its name."""
    return client.containers.get(deployment)
