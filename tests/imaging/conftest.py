"""The model-server image, built once per session (or reused when its inputs are unchanged)."""

from __future__ import annotations

import time

import docker
import pytest
from image_build import build_test_image


@pytest.fixture(scope="session")
def modelserver_image(docker_client: docker.DockerClient, run_labels: dict[str, str]) -> str:
    """`anvyl/modelserver:<version>`, built from `debian-bootstrap` or reused by content hash."""
    started = time.monotonic()
    ref = build_test_image(docker_client, run_labels)
    print(f"model-server image {ref} ready in {time.monotonic() - started:.1f} s")
    return ref
