"""Fixtures for the control-plane tests: labelled busybox containers, a real `anvyl serve`.

The conftests of tests/runtime, tests/server and tests/cli import what they need from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import free_port, wait_for

ANVYL = str(Path(sys.executable).parent / "anvyl")
MakeContainer = Callable[..., "docker.models.containers.Container"]


@pytest.fixture
def make_container(
    docker_client: docker.DockerClient, busybox_image: str, run_labels: dict[str, str]
) -> Iterator[MakeContainer]:
    """Start labelled busybox containers (Anvyl-managed unless managed=False); removed after."""
    created: list[docker.models.containers.Container] = []

    def make(
        command: Sequence[str] = ("sleep", "300"),
        *,
        managed: bool = True,
        labels: dict[str, str] | None = None,
        name: str | None = None,
    ) -> docker.models.containers.Container:
        all_labels = {**run_labels, **(labels or {})}
        if managed:
            all_labels["anvyl.managed"] = "true"
        container = docker_client.containers.run(
            busybox_image,
            list(command),
            detach=True,
            labels=all_labels,
            name=name or f"anvyl-test-{uuid.uuid4().hex[:10]}",
        )
        created.append(container)
        return container

    yield make
    for container in created:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


def health_status(address: str, *, token: str | None = None, timeout: float = 2.0) -> int:
    """The overall health status a server answers (raises if none answers)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status


@dataclass
class Served:
    """A running `anvyl serve` subprocess."""

    proc: subprocess.Popen[str]
    port: int
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """`127.0.0.1:port`."""
        return f"127.0.0.1:{self.port}"

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run the `anvyl` CLI against this server."""
        full_env = {**os.environ, "ANVYL_ADDR": self.address, **self.env, **(env or {})}
        if "ANVYL_DEBUG" not in (env or {}):
            full_env.pop("ANVYL_DEBUG", None)
        return subprocess.run(
            [ANVYL, *args], env=full_env, capture_output=True, text=True, timeout=timeout
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(
    home: Path,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    command: Sequence[str] = (ANVYL,),
) -> Served:
    """Start `anvyl serve` on a free loopback port and wait until its health check answers.

    `command` replaces the `anvyl` executable (e.g. a script that patches something first).
    """
    port = free_port()
    full_env = {**os.environ, "ANVYL_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(proc=proc, port=port, home=home, env={"ANVYL_HOME": str(home)})

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"anvyl serve exited {proc.returncode}: {proc.stderr.read()}")
        return health_status(served.address) == health_pb2.HealthCheckResponse.SERVING

    try:
        wait_for(ready, timeout=20, what="anvyl serve to answer its health check")
    except BaseException:
        served.stop(signal.SIGKILL)
        raise
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `anvyl serve` subprocess for a test module (temporary ANVYL_HOME)."""
    server = start_serve(tmp_path_factory.mktemp("anvyl-home"))
    yield server
    server.stop()
