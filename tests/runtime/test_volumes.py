"""Volumes filled and images moved through the engine API, against the real local engine."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Iterator

import docker
import pytest

from anvyl.errors import FailedPrecondition
from anvyl.runtime import DockerDriver, image_transfer, volumes


@pytest.fixture
def driver() -> Iterator[DockerDriver]:
    d = DockerDriver()
    yield d
    d.close()


@pytest.fixture
def volume(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"anvyl-test-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.volumes.get(name).remove(force=True)


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_volume_is_made_once_and_filled_through_a_helper(
    driver: DockerDriver,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_labels: dict[str, str],
    volume: str,
) -> None:
    assert volumes.ensure_volume(driver, volume, run_labels) is True
    assert volumes.ensure_volume(driver, volume, run_labels) is False
    assert docker_client.volumes.get(volume).attrs["Labels"] == run_labels
    with volumes.volume_files(
        driver, image=busybox_image, volume=volume, path="/data", labels=run_labels
    ) as files:
        assert not files.exists("hello.txt")
        files.put(_tar("hello.txt", b"hi\n"))
        files.put(iter([_tar("more.txt", b"more\n")]))  # a stream of chunks too
        assert files.exists("hello.txt") and files.exists("more.txt")
        helper = files.container_id
    assert not docker_client.containers.list(all=True, filters={"id": helper})  # removed
    out = docker_client.containers.run(
        busybox_image, ["cat", "/data/hello.txt"], remove=True, labels=run_labels,
        volumes={volume: {"bind": "/data", "mode": "ro"}},
    )  # fmt: skip
    assert out == b"hi\n"


def test_a_failed_fill_removes_its_helper(
    driver: DockerDriver,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_labels: dict[str, str],
    volume: str,
) -> None:
    volumes.ensure_volume(driver, volume, run_labels)
    with (
        pytest.raises(FailedPrecondition, match="not a tar"),
        volumes.volume_files(
            driver, image=busybox_image, volume=volume, path="/data", labels=run_labels
        ) as files,
    ):
        helper = files.container_id
        raise FailedPrecondition("not a tar")
    assert not docker_client.containers.list(all=True, filters={"id": helper})


def test_an_image_moves_between_engines(driver: DockerDriver, busybox_image: str) -> None:
    want = image_transfer.image_id(driver, busybox_image)
    assert want.startswith("sha256:")
    assert image_transfer.image_id(driver, "anvyl/no-such-image:missing") == ""
    seen: list[int] = []
    sent = image_transfer.transfer_image(driver, driver, busybox_image, progress=seen.append)
    assert sent > 0 and seen[-1] == sent
    assert image_transfer.image_id(driver, busybox_image) == want
