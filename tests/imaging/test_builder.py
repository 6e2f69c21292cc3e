"""build_image / ensure_image against the real engine: the build, the hash skip, clear errors."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from helpers import imaging_cache_dir

import anvyl
from anvyl.imaging import LABEL_BUILD_HASH, LABEL_VERSION, ImageBuildError, default_tag
from anvyl.imaging.base import LABEL_BUILD
from anvyl.runtime.images import build_image, ensure_image

pytestmark = pytest.mark.docker


def test_image_is_tagged_with_this_version(
    docker_client: docker.DockerClient, modelserver_image: str
) -> None:
    assert modelserver_image == default_tag() == f"anvyl/modelserver:{anvyl.__version__}"
    labels = docker_client.images.get(modelserver_image).labels
    assert labels[LABEL_VERSION] == anvyl.__version__
    assert len(labels[LABEL_BUILD_HASH]) == 64


def test_second_build_is_skipped_by_content_hash(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    before = docker_client.images.get(modelserver_image).id
    lines: list[str] = []
    ref = build_image(
        docker_client,
        base_image="debian-bootstrap",
        cache_dir=imaging_cache_dir(),
        progress=lines.append,
        container_labels=run_labels,
    )
    assert ref == modelserver_image
    assert f"Image {ref} is up to date" in lines
    assert not any(line.startswith("Step ") for line in lines)
    assert docker_client.images.get(ref).id == before


def test_ensure_image_reuses_the_image(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    before = docker_client.images.get(modelserver_image).id
    ref = ensure_image(
        docker_client,
        cache_dir=imaging_cache_dir(),
        base_image="debian-bootstrap",
        container_labels=run_labels,
    )
    assert ref == modelserver_image
    assert docker_client.images.get(modelserver_image).id == before


def test_no_throwaway_containers_are_left(
    docker_client: docker.DockerClient, modelserver_image: str, run_labels: dict[str, str]
) -> None:
    mine = [f"{LABEL_BUILD}=1", *(f"{k}={v}" for k, v in run_labels.items())]
    assert docker_client.containers.list(all=True, filters={"label": mine}) == []


def test_unpullable_base_image_says_how_to_build_without_a_registry(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    with pytest.raises(ImageBuildError) as info:
        build_image(
            docker_client,
            base_image="anvyl-test/no-such-base:0",
            cache_dir=tmp_path,
            tag="anvyl-test/never-built:0",
        )
    message = info.value.message
    assert "cannot pull the base image anvyl-test/no-such-base:0" in message
    assert "--base-image debian-bootstrap" in message
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get("anvyl-test/never-built:0")


def test_missing_ca_bundle_is_refused(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    with pytest.raises(anvyl.errors.InvalidArgument, match="no such file"):
        build_image(docker_client, ca_bundle=tmp_path / "nope.pem", cache_dir=tmp_path)
