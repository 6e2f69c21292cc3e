"""Fixtures of the lifecycle tests (the helpers live in lifecycle_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fixtures_control_plane import Served
from helpers import wait_for
from models_harness import deployments, make_home, model_containers, serve_models, stop_all


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


@pytest.fixture(scope="module")
def process_served(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[Served]:
    """One `anvyl serve --runtime process` per module, on its own home (no image needed)."""
    home = make_home(tmp_path_factory.mktemp("anvyl-process-home"), bundled_model)
    server = serve_models(home, run_labels, args=("--runtime", "process"))
    yield server
    try:
        stop_all(server)
    finally:
        server.stop()


@pytest.fixture
def procs(process_served: Served) -> Iterator[Served]:
    """The process server; after the test every deployment is stopped and its files gone."""
    yield process_served
    stop_all(process_served)
    assert deployments(process_served) == []
    home = process_served.home
    assert not list((home / "processes").glob("*/spec.json"))
    assert not list((home / "secrets").glob("*/api-key"))


@pytest.fixture(params=["container", "process"])
def any_runtime(request: pytest.FixtureRequest) -> Served:
    """The module's server of each runtime, for tests whose behaviour is the same on both."""
    return request.getfixturevalue("models" if request.param == "container" else "procs")
