"""Fixtures of the model-server tests: one real server per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from modelserver_harness import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One shared server per module: no key, 8 slots, a 512-token context, 48-token cap."""
    log = tmp_path_factory.mktemp("modelserver") / "server.log"
    s = start_server(
        bundled_model, log, "--max-batch", "8", "--ctx", "512", "--max-tokens-limit", "48"
    )
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def structured_server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server shared by the structured-output and tool tests: 8 slots, a 2048 context."""
    log = tmp_path_factory.mktemp("structured") / "server.log"
    s = start_server(
        bundled_model, log, "--max-batch", "8", "--ctx", "2048", "--max-tokens-limit", "256"
    )
    yield s
    stop_server(s)
