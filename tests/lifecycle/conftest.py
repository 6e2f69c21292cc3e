"""Fixtures of the lifecycle tests (the helpers live in lifecycle_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fixtures_control_plane import Served
from helpers import wait_for
from lifecycle_harness import deployments, make_home, model_containers, serve_models, stop_all


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    """A temporary ANVYL_HOME holding (a link to) the bundled model."""
    return make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)


@pytest.fixture(scope="module")
def model_served(
    model_home: Path, modelserver_image: str, run_labels: dict[str, str]
) -> Iterator[Served]:
    """One `anvyl serve` per module, for tests that do not need their own."""
    server = serve_models(model_home, run_labels)
    yield server
    try:
        stop_all(server)
    finally:
        server.stop()


@pytest.fixture
def models(
    model_served: Served, docker_client: docker.DockerClient, run_labels: dict[str, str]
) -> Iterator[Served]:
    """The module's server, with every deployment stopped (and checked gone) after the test."""
    yield model_served
    stop_all(model_served)
    wait_for(
        lambda: not model_containers(docker_client, run_labels),
        timeout=30,
        what="the model containers to be removed",
    )
    assert deployments(model_served) == []
