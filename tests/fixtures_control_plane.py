"""A real `anvyl serve` subprocess for the control-plane tests, and the CLI run against it.

The `make_container` fixture (labelled busybox containers) lives in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import free_port, wait_for

ANVYL = str(Path(sys.executable).parent / "anvyl")
MakeContainer = Callable[..., "docker.models.containers.Container"]


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
