"""Named volumes filled through an engine's API: no shell on the node, no registry.

A volume is filled through a helper container that is created, never started, and removed:
the engine's archive endpoints (`PUT`/`HEAD /containers/{id}/archive`) write into and look at
the volume it mounts. Errors are Anvyl's (`DockerDriver.engine_errors`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from anvyl import config
from anvyl.errors import FailedPrecondition, NotFound
from anvyl.runtime.driver import DockerDriver


def ensure_volume(driver: DockerDriver, name: str, labels: Mapping[str, str]) -> bool:
    """Create the named volume with `labels` unless it exists; True when it was created."""
    try:
        with driver.engine_errors():
            driver.client.api.inspect_volume(name)
        return False
    except NotFound:
        pass
    with driver.engine_errors():
        driver.client.api.create_volume(name, labels=dict(labels))
    return True


class VolumeFiles:
    """The files of a volume mounted at `path` in a helper container (`volume_files`)."""

    def __init__(self, driver: DockerDriver, container_id: str, path: str) -> None:
        self.driver, self.container_id, self.path = driver, container_id, path

    def exists(self, name: str) -> bool:
        """Whether `name` (relative to the mount) is in the volume."""
        try:
            with self.driver.engine_errors():
                self.driver.client.api.get_archive(self.container_id, f"{self.path}/{name}")
            return True
        except NotFound:
            return False

    def put(self, archive: bytes | Iterable[bytes], where: str = "") -> None:
        """Unpack a tar (bytes or a stream of chunks) at the mount's root."""
        with self.driver.engine_errors():
            if not self.driver.client.api.put_archive(self.container_id, self.path, archive):
                raise FailedPrecondition(f"{where or self.driver.base_url} refused the files")


@contextmanager
def volume_files(
    driver: DockerDriver, *, image: str, volume: str, path: str, labels: Mapping[str, str]
) -> Iterator[VolumeFiles]:
    """A helper container of `image` with `volume` at `path`, removed when the block ends."""
    with driver.engine_errors():
        api = driver.client.api
        helper = api.create_container(
            image,
            command=["true"],
            name=f"anvyl-model-copy-{uuid.uuid4().hex[:12]}",
            labels={**labels, config.LABEL_MANAGED: "true"},
            network_disabled=True,
            host_config=api.create_host_config(
                mounts=[volume_mount(volume, path, read_only=False)], network_mode="none"
            ),
        )["Id"]
    try:
        yield VolumeFiles(driver, helper, path)
    finally:
        try:
            with driver.engine_errors():
                api.remove_container(helper, force=True)
        except Exception:  # the copy's own error matters more than the helper left behind
            pass


def volume_mount(volume: str, target: str, *, read_only: bool) -> dict[str, Any]:
    """A volume as the engine API's mount object (what `docker.types.Mount` builds)."""
    return {
        "Target": target,
        "Source": volume,
        "Type": "volume",
        "ReadOnly": read_only,
        "VolumeOptions": {"NoCopy": True},
    }
