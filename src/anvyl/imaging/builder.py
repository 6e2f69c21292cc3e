"""Build Anvyl's model-server image through the Docker SDK, skipping it when nothing changed."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

import anvyl
from anvyl.config import IMAGE_REPOSITORY
from anvyl.errors import InvalidArgument
from anvyl.imaging.base import DEBIAN_BOOTSTRAP, DEFAULT_BASE_IMAGE, resolve_base_image
from anvyl.imaging.context import assemble_context, source_hash
from anvyl.imaging.errors import ImageBuildError
from anvyl.imaging.wheels import ensure_kernel_wheel, ensure_wheels, with_kernel_wheel

LABEL_VERSION = "anvyl.version"
LABEL_BUILD_HASH = "anvyl.build.hash"
LABEL_BASE_IMAGE = "anvyl.base.image"
LABEL_SOURCE_HASH = "anvyl.source.hash"
BUILD_TIMEOUT_S = 3600  # one silent build step (a big pip install) must not time the stream out

Progress = Callable[[str], None]


def default_tag() -> str:
    """`anvyl/modelserver:<version of this Anvyl>`, or `ANVYL_IMAGE_TAG` when set.

    The override lets several checkouts share one engine without rebuilding each other's image
    (the image is rebuilt whenever its sources differ from the running Anvyl's).
    """
    return os.environ.get("ANVYL_IMAGE_TAG") or f"{IMAGE_REPOSITORY}:{anvyl.__version__}"


def build_image(
    client: docker.DockerClient,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    ca_bundle: Path | None = None,
    tag: str | None = None,
    progress: Progress | None = None,
    cache_dir: Path,
    container_labels: Mapping[str, str] | None = None,
) -> str:
    """Build the model-server image unless an image with the same content hash has the tag.

    Args:
        client: a client of the engine to build on.
        base_image: the image to build on, or `debian-bootstrap` for a Debian base made here
            with debootstrap (`anvyl/debian-base:bookworm`, reused once made).
        ca_bundle: a CA bundle for networks that intercept TLS: the host-side `pip download`
            trusts it (`--cert`), and so does apt inside the build when the base lacks
            procps or OpenBLAS. pip inside the build never touches a network.
        tag: the image reference to build (default `anvyl/modelserver:<version>`).
        progress: called with one line at a time; lines that start with two spaces are raw
            tool output (pip, debootstrap, docker build), the others name a step.
        cache_dir: kept between builds: wheels, the Debian base tarball, base-image probes.
        container_labels: extra labels for the throwaway containers the builder runs.

    Returns:
        The image reference (`tag`).

    Raises:
        ImageBuildError: the base cannot be pulled or made, a download or the build failed.
    """
    say = progress or (lambda _line: None)
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise InvalidArgument(f"--ca-bundle {ca_bundle}: no such file")
    ref = tag or default_tag()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache_dir):
        base = resolve_base_image(
            client,
            base_image,
            cache_dir=cache_dir,
            progress=say,
            container_labels=container_labels,
        )
        wheels = ensure_wheels(base, cache_dir=cache_dir, progress=say, ca_bundle=ca_bundle)
        kernel = ensure_kernel_wheel(base, cache_dir=cache_dir, progress=say, ca_bundle=ca_bundle)
        if kernel is not None:
            wheels = with_kernel_wheel(wheels, kernel)
        tmp_root = cache_dir / "tmp"
        tmp_root.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix="context-") as tmp:
            context = assemble_context(Path(tmp), base=base, wheels=wheels, ca_bundle=ca_bundle)
            previous = _existing_image(client, ref)
            if (
                previous is not None
                and previous.labels.get(LABEL_BUILD_HASH) == context.content_hash
            ):
                say(f"Image {ref} is up to date")
                return ref
            say(f"Building {ref} on {base.ref}")
            labels = {
                LABEL_VERSION: context.version,
                LABEL_BUILD_HASH: context.content_hash,
                LABEL_BASE_IMAGE: base_image,
                LABEL_SOURCE_HASH: source_hash(),
            }
            _run_build(
                client,
                context.path,
                ref,
                buildargs={"BASE_IMAGE": base.ref, "ANVYL_VERSION": context.version},
                labels=labels,
                progress=say,
            )
    if previous is not None:
        _remove_if_dangling(client, previous.id, say)
    say(f"Built {ref}")
    return ref


def ensure_image(
    client: docker.DockerClient,
    *,
    cache_dir: Path,
    base_image: str | None = None,
    progress: Progress | None = None,
    container_labels: Mapping[str, str] | None = None,
) -> str:
    """The model-server image for this Anvyl version: reused when up to date, built otherwise.

    Without `base_image`, `python:3.12-slim` is used when the engine has it and a debootstrap
    Debian base otherwise, so this works on machines that reach no registry (tests, CI).
    """
    if base_image is None:
        try:
            client.images.get(DEFAULT_BASE_IMAGE)
            base_image = DEFAULT_BASE_IMAGE
        except docker.errors.ImageNotFound:
            base_image = DEBIAN_BOOTSTRAP
    return build_image(
        client,
        base_image=base_image,
        cache_dir=cache_dir,
        progress=progress,
        container_labels=container_labels,
    )


@contextlib.contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    """One build at a time per cache directory (parallel test sessions share the cache)."""
    with (cache_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _existing_image(client: docker.DockerClient, ref: str) -> Image | None:
    """The image `ref` names now, or None."""
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _run_build(
    client: docker.DockerClient,
    path: Path,
    ref: str,
    *,
    buildargs: dict[str, str],
    labels: dict[str, str],
    progress: Progress,
) -> None:
    """`docker build` through the API, streaming its lines; failures carry the log's tail."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        stream = client.api.build(
            path=str(path),
            tag=ref,
            decode=True,
            rm=True,
            forcerm=True,
            pull=False,
            buildargs=buildargs,
            labels=labels,
            timeout=BUILD_TIMEOUT_S,
        )
        for event in stream:
            if "stream" in event:
                for line in str(event["stream"]).splitlines():
                    if not line.strip():
                        continue
                    tail.append(line)
                    progress(line if line.startswith("Step ") else f"  {line}")
            elif "status" in event:
                progress(f"  {event['status']}")
            if "error" in event:
                log = "\n".join(tail)
                raise ImageBuildError(f"docker build of {ref} failed: {event['error']}\n{log}")
    except docker.errors.DockerException as exc:
        log = "\n".join(tail)
        raise ImageBuildError(f"docker build of {ref} failed: {exc}\n{log}") from exc


def _remove_if_dangling(client: docker.DockerClient, image_id: str, progress: Progress) -> None:
    """Remove the image the tag pointed to before, unless it is still tagged or in use."""
    try:
        image = client.images.get(image_id)
        if image.tags:
            return
        client.images.remove(image_id)
        progress(f"Removed the previous image {image_id[:19]}")
    except docker.errors.DockerException:
        pass  # in use by a container, or already gone
