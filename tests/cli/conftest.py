"""Fixtures of the CLI tests: a real `anvyl serve` subprocess per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures_control_plane import Served, start_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `anvyl serve` subprocess for a test module (temporary ANVYL_HOME)."""
    server = start_serve(tmp_path_factory.mktemp("anvyl-home"))
    yield server
    server.stop()
