"""Fixtures of the reliability tests (helpers live in reliability_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_control_plane import Served
from reliability_harness import make_home, serve_models, stop_all


def pytest_configure(config: pytest.Config) -> None:
    """Register the `slow` marker (load and fault scenarios; still run by default)."""
    config.addinivalue_line("markers", "slow: a load or fault scenario (minutes, still run in CI)")


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    """A temporary ANVYL_HOME holding (a link to) the bundled model."""
    return make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)


@pytest.fixture(scope="module")
def served(
    model_home: Path, modelserver_image: str, run_labels: dict[str, str]
) -> Iterator[Served]:
    """One `anvyl serve` per module whose model containers carry the run's label."""
    server = serve_models(model_home, run_labels)
    yield server
    try:
        stop_all(server)
    finally:
        server.stop()
