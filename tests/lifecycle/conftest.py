"""Fixtures of the lifecycle tests (the helpers live in lifecycle_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from fixtures_control_plane import Served
from helpers import wait_for
from lifecycle_harness import deployments, model_containers, stop_all


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
