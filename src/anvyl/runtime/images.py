"""The model-server image on a Docker engine: pull or import the base, probe it, build, skip.

The engine side of `anvyl.imaging` (which holds the pure parts: build context, wheels,
Dockerfile, the Debian tarball). Docker SDK errors met on the way become `ImageBuildError`
(an Anvyl error) here; `DockerDriver.build_image` / `ensure_image` wrap these functions in the
driver's `engine_errors`, so nothing outside `anvyl.runtime` sees a `docker` exception.

    build_image(client, base_image=..., ca_bundle=..., tag=..., progress=..., cache_dir=...)
    ensure_image(client, cache_dir=...)   reuse when up to date; base chosen for this machine
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors

from anvyl.errors import InvalidArgument
from anvyl.imaging import naming
from anvyl.imaging.base import (
    DEBIAN_BASE_IMAGE,
    DEBIAN_BOOTSTRAP,
    DEFAULT_BASE_IMAGE,
    LABEL_BUILD,
    PROBE,
    BaseImage,
    base_from_probe,
    debian_import_changes,
    debian_tar_path,
    debootstrap_tar,
    probe_cache_file,
    split_ref,
)
from anvyl.imaging.context import assemble_context, source_hash
from anvyl.imaging.errors import ImageBuildError
from anvyl.imaging.naming import (
    LABEL_BASE_IMAGE,
    LABEL_BUILD_HASH,
    LABEL_SOURCE_HASH,
    LABEL_VERSION,
)
from anvyl.imaging.wheels import ensure_kernel_wheel, ensure_wheels, with_kernel_wheel

if TYPE_CHECKING:
    from docker.models.images import Image

BUILD_TIMEOUT_S = 3600  # one silent build step (a big pip install) must not time the stream out

Progress = Callable[[str], None]


def image_labels(client: docker.DockerClient, ref: str) -> dict[str, str] | None:
    """The labels of the image `ref` names ({} when it has none), or None when there is none."""
    image = _existing_image(client, ref)
    return None if image is None else dict(image.labels or {})


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
    ref = tag or naming.default_tag()
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
        present = _existing_image(client, DEFAULT_BASE_IMAGE) is not None
        base_image = DEFAULT_BASE_IMAGE if present else DEBIAN_BOOTSTRAP
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


# -- the base image on the engine ----------------------------------------------------------


def resolve_base_image(
    client: docker.DockerClient,
    name: str,
    *,
    cache_dir: Path,
    progress: Progress,
    container_labels: Mapping[str, str] | None = None,
) -> BaseImage:
    """Make sure the base image `name` is on the engine (pull or bootstrap) and probe it."""
    if name == DEBIAN_BOOTSTRAP:
        ref = ensure_debian_base(client, cache_dir=cache_dir, progress=progress)
    else:
        ref = name
        _ensure_pulled(client, ref, progress)
    image = client.images.get(ref)
    return probe_base_image(
        client, ref, image.id, cache_dir=cache_dir, progress=progress, labels=container_labels
    )


def _ensure_pulled(client: docker.DockerClient, ref: str, progress: Progress) -> None:
    """Pull `ref` unless it is present; a failed pull says how to build without a registry."""
    if _existing_image(client, ref) is not None:
        progress(f"Base image {ref} is present")
        return
    progress(f"Pulling base image {ref}")
    repository, tag = split_ref(ref)
    error: str | None = None
    try:
        for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                error = str(event["error"])
                break
            status = event.get("status")
            if status:
                progress(f"  {event.get('id', '')} {status} {event.get('progress', '')}".rstrip())
    except docker.errors.DockerException as exc:
        error = str(exc)
    if error is None and _existing_image(client, ref) is None:
        error = "the engine reported no error, but the image is not there"
    if error is not None:
        raise ImageBuildError(
            f"cannot pull the base image {ref}: {error}\n"
            f"No image registry reachable? Build a Debian base locally instead: "
            f"`anvyl image build --base-image {DEBIAN_BOOTSTRAP}` (needs root and debootstrap, "
            f"fetches packages from Debian's archive), or load {ref} with `docker load` first."
        )


def ensure_debian_base(client: docker.DockerClient, *, cache_dir: Path, progress: Progress) -> str:
    """`anvyl/debian-base:bookworm`: reused, re-imported from the cached tar, or debootstrapped."""
    if _existing_image(client, DEBIAN_BASE_IMAGE) is not None:
        progress(f"Base image {DEBIAN_BASE_IMAGE} is present")
        return DEBIAN_BASE_IMAGE
    tar_path = debian_tar_path(cache_dir)
    if not tar_path.exists():
        debootstrap_tar(tar_path, progress)
    progress(f"Importing {tar_path.name} as {DEBIAN_BASE_IMAGE}")
    repository, tag = DEBIAN_BASE_IMAGE.split(":")
    try:
        client.api.import_image_from_file(
            str(tar_path), repository=repository, tag=tag, changes=debian_import_changes()
        )
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot import the Debian base into the engine: {exc}") from exc
    return DEBIAN_BASE_IMAGE


def probe_base_image(
    client: docker.DockerClient,
    ref: str,
    image_id: str,
    *,
    cache_dir: Path,
    progress: Progress,
    labels: Mapping[str, str] | None = None,
) -> BaseImage:
    """Python version, architecture and libc of a base image (a throwaway container, cached)."""
    cache_file = probe_cache_file(cache_dir, image_id)
    if cache_file.exists():
        info = json.loads(cache_file.read_text())
    else:
        progress(f"Probing {ref} for its Python version and architecture")
        info = _run_probe(client, ref, labels or {})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(info))
    base = base_from_probe(ref, image_id, info)
    progress(f"Base {ref}: Python {base.python_full}, {base.machine}, {' '.join(base.libc)}")
    return base


def _run_probe(client: docker.DockerClient, ref: str, labels: Mapping[str, str]) -> Any:
    """Run the probe in a container labelled `anvyl.build=1`, removed afterwards."""
    container = client.containers.create(
        ref,
        entrypoint=["python3", "-c", PROBE],
        command=[],
        labels={LABEL_BUILD: "1", **labels},
        network_disabled=True,
    )
    try:
        container.start()
        status = container.wait(timeout=120)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot run python3 in the base image {ref}: {exc}") from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise ImageBuildError(
            f"the base image {ref} has no working python3 (exit status "
            f"{status.get('StatusCode')}): {output[-500:]}"
        )
    try:
        return json.loads(output.splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ImageBuildError(f"unexpected output probing {ref}: {output[-500:]}") from exc
