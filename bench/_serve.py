"""A real `anvyl serve` for the benchmarks (shared by control_plane.py and lifecycle.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

ANVYL = str(Path(sys.executable).parent / "anvyl")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    home: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`anvyl serve` on a free port; returns the process and its address once healthy."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = subprocess.Popen(
        [ANVYL, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "ANVYL_HOME": str(home), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return proc, address
            except grpc.RpcError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    sys.exit("anvyl serve did not start")
                time.sleep(0.05)
