"""Fixtures of the multi-node tests: a 3-node Swarm lab for the module, torn down even on failure.

The lab's engines carry the run's label; everything a test starts in the lab dies with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from lab import SwarmLab


@pytest.fixture(scope="module")
def swarm(run_labels: dict[str, str]) -> Iterator[SwarmLab]:
    """A fresh 3-node Swarm (node 1 manages it) for the module."""
    lab = SwarmLab(3, labels=dict(run_labels))
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def swarm_tls(run_labels: dict[str, str]) -> Iterator[SwarmLab]:
    """A fresh 3-node Swarm whose engines also listen on TCP with mutual TLS."""
    lab = SwarmLab(3, labels=dict(run_labels), tls=True)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def swarm_busybox(swarm: SwarmLab, docker_client: docker.DockerClient, busybox_image: str) -> str:
    """The test busybox image, loaded on every node through its engine API."""
    swarm.load_image(docker_client, busybox_image)
    return busybox_image
