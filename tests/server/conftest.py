"""Fixtures of the server tests: an in-process server on port 0 and its channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from anvyl.server import AnvylServer, ServerConfig


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AnvylServer]:
    """A started server on a free loopback port with its own database."""
    srv = AnvylServer(ServerConfig(host="127.0.0.1", port=0, db_path=tmp_path / "anvyl.db"))
    srv.start()
    yield srv
    srv.stop(0)


@pytest.fixture
def channel(server: AnvylServer) -> Iterator[grpc.Channel]:
    """A channel to `server`."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
