"""`anvyl serve` on a lab's manager, and the CLI against it (shared by the Swarm test modules)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures_control_plane import Served, start_serve
from helpers import free_port
from lab import SwarmLab

MODEL_ID = "smollm2-135m-instruct-mlx"
START_TIMEOUT_S = 300.0


@dataclass
class Cluster:
    """The lab, the server on its manager and the gateway's URL."""

    lab: SwarmLab
    served: Served
    gateway: str
    serve_args: list[str] = field(default_factory=list)
    serve_env: dict[str, str] = field(default_factory=dict)

    def restart(self, *, forget: tuple[str, ...] = ()) -> None:
        """Stop the server, delete `forget` (paths under its home), start it again."""
        import shutil

        home = self.served.home
        self.served.stop()
        for name in forget:
            for path in home.glob(name):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self.served = start_serve(home, args=self.serve_args, env=self.serve_env)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the CLI against the server."""
        return self.served.cli(*args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> str:
        """Run the CLI, assert success, return stdout."""
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def deployment(self, name: str) -> dict[str, Any]:
        """One deployment of `model ps -o json`."""
        for d in json.loads(self.ok("model", "ps", "-o", "json"))["deployments"]:
            if d["name"] == name:
                return d
        raise AssertionError(f"no deployment {name}")

    def ready_nodes(self, name: str) -> list[str]:
        """Hostnames of the deployment's ready replicas."""
        return sorted(r["node"] for r in self.deployment(name)["replicas"] if r["ready"])


@contextmanager
def serve_on(
    lab: SwarmLab,
    model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    labels: dict[str, str],
) -> Iterator[Cluster]:
    """`anvyl serve` (with its gateway) on the lab's manager engine, stopped after the block."""
    home = tmp_path_factory.mktemp("anvyl-home")
    (home / "models").mkdir()
    (home / "models" / model.name).symlink_to(model.resolve())
    port = free_port()
    args = ["--gateway-port", str(port), "--dashboard-port", "0"]
    env = {
        "DOCKER_HOST": lab.manager.url,
        "ANVYL_LABELS": ",".join(f"{k}={v}" for k, v in labels.items()),
    }
    cluster = Cluster(lab, start_serve(home, args=args, env=env), f"http://127.0.0.1:{port}")
    cluster.serve_args, cluster.serve_env = args, env
    try:
        yield cluster
    finally:
        cluster.served.stop()
