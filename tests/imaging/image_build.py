"""Build (or reuse) the model-server image for tests; importable by other test areas' conftests."""

from __future__ import annotations

import os
from pathlib import Path

import docker

from anvyl.imaging import DEBIAN_BOOTSTRAP, ensure_image


def imaging_cache_dir() -> Path:
    """Build inputs kept between runs: the Debian base tarball and the wheels (never required)."""
    # Same root as tests/conftest.py's test_cache_dir(), which a test module cannot import.
    root = Path(os.environ.get("ANVYL_TEST_CACHE") or Path.home() / ".cache" / "anvyl-tests")
    return root / "imaging"


def build_test_image(client: docker.DockerClient, labels: dict[str, str]) -> str:
    """Build or reuse the image from a debootstrap base (no registry here); return its ref."""
    return ensure_image(
        client,
        cache_dir=imaging_cache_dir(),
        base_image=DEBIAN_BOOTSTRAP,
        container_labels=labels,
    )
