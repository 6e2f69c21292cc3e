"""The base image: find or pull it, or make a Debian one locally with debootstrap; probe it."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from anvyl.imaging.errors import ImageBuildError

DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEBIAN_BOOTSTRAP = "debian-bootstrap"
DEBIAN_BASE_IMAGE = "anvyl/debian-base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libopenblas0-pthread", "procps")
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_MIRROR_ENV = "ANVYL_DEBIAN_MIRROR"  # another mirror for debootstrap, when set
LABEL_BUILD = "anvyl.build"  # on throwaway containers the builder runs (never anvyl.managed)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
    "'python_full': platform.python_version(), 'machine': platform.machine(), "
    "'libc': list(platform.libc_ver())}))"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BaseImage:
    """A base image present on the engine, and what the image built on it must match."""

    ref: str  # what FROM uses
    id: str  # sha256:... of the image
    python: str  # "3.11"
    python_full: str  # "3.11.2"
    machine: str  # platform.machine(): x86_64, aarch64
    libc: tuple[str, str]  # ("glibc", "2.36")

    @property
    def glibc_minor(self) -> int:
        """The minor version of glibc (36 for 2.36)."""
        name, version = self.libc
        if name != "glibc" or not version.startswith("2."):
            raise ImageBuildError(
                f"base image {self.ref} does not use glibc ({name or 'unknown'} {version}); "
                "the mlx wheels need a glibc (manylinux) base such as python:3.12-slim or "
                f"--base-image {DEBIAN_BOOTSTRAP}"
            )
        return int(version.split(".")[1])


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
    try:
        client.images.get(ref)
        progress(f"Base image {ref} is present")
        return
    except docker.errors.ImageNotFound:
        pass
    progress(f"Pulling base image {ref}")
    repository, tag = _split_ref(ref)
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
    if error is None:
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            error = "the engine reported no error, but the image is not there"
    if error is not None:
        raise ImageBuildError(
            f"cannot pull the base image {ref}: {error}\n"
            f"No image registry reachable? Build a Debian base locally instead: "
            f"`anvyl image build --base-image {DEBIAN_BOOTSTRAP}` (needs root and debootstrap, "
            f"fetches packages from Debian's archive), or load {ref} with `docker load` first."
        )


def _split_ref(ref: str) -> tuple[str, str | None]:
    """`repo:tag` → (repo, tag); a digest or a bare name is passed through."""
    if "@" in ref:
        return ref, None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = ref.rsplit(":", 1)
        return repository, tag
    return ref, "latest"


def ensure_debian_base(client: docker.DockerClient, *, cache_dir: Path, progress: Progress) -> str:
    """`anvyl/debian-base:bookworm`: reused, re-imported from the cached tar, or debootstrapped."""
    try:
        client.images.get(DEBIAN_BASE_IMAGE)
        progress(f"Base image {DEBIAN_BASE_IMAGE} is present")
        return DEBIAN_BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    base_dir = cache_dir / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    tar_path = base_dir / f"debian-{DEBIAN_SUITE}-minbase-{_packages_key()}.tar"
    if not tar_path.exists():
        _debootstrap_tar(tar_path, progress)
    progress(f"Importing {tar_path.name} as {DEBIAN_BASE_IMAGE}")
    repository, tag = DEBIAN_BASE_IMAGE.split(":")
    try:
        client.api.import_image_from_file(
            str(tar_path),
            repository=repository,
            tag=tag,
            changes=[
                f"ENV PATH={DEFAULT_PATH}",
                "ENV LANG=C.UTF-8",
                f"LABEL {LABEL_BUILD}.base={DEBIAN_SUITE}-minbase",
                'CMD ["python3"]',
            ],
        )
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot import the Debian base into the engine: {exc}") from exc
    return DEBIAN_BASE_IMAGE


def _packages_key() -> str:
    """A short name for the package list, so a changed list makes a new base."""
    return hashlib.sha256(",".join(DEBIAN_PACKAGES).encode()).hexdigest()[:8]


def _debootstrap_tar(tar_path: Path, progress: Progress) -> None:
    """Debootstrap a minimal Debian into a temporary directory and tar it to `tar_path`."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        missing = "debootstrap is not installed" if debootstrap is None else "not running as root"
        raise ImageBuildError(
            f"--base-image {DEBIAN_BOOTSTRAP} needs root and debootstrap ({missing}); "
            "install it with `apt-get install debootstrap` and run as root, "
            f"or pass a base image the engine already has (e.g. {DEFAULT_BASE_IMAGE})"
        )
    mirror = os.environ.get(DEBIAN_MIRROR_ENV) or DEFAULT_DEBIAN_MIRROR
    with tempfile.TemporaryDirectory(dir=tar_path.parent, prefix=".rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"Bootstrapping Debian {DEBIAN_SUITE} from {mirror} (about a minute)")
        _run_streaming(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            progress,
            what="debootstrap",
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        progress("Packing the Debian root file system")
        partial = tar_path.with_suffix(".tar.partial")
        _run_streaming(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            progress,
            what="tar",
        )
        partial.replace(tar_path)


def _run_streaming(argv: list[str], progress: Progress, *, what: str) -> None:
    """Run `argv` (no shell), stream its output lines; on failure raise with the output's tail."""
    tail: collections.deque[str] = collections.deque(maxlen=30)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            progress(f"  {line}")
        code = proc.wait()
    if code != 0:
        log = "\n".join(tail)
        raise ImageBuildError(f"{what} failed with exit status {code}:\n{log}")


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
    cache_file = cache_dir / "base" / f"probe-{image_id.replace(':', '-')}.json"
    if cache_file.exists():
        info = json.loads(cache_file.read_text())
    else:
        progress(f"Probing {ref} for its Python version and architecture")
        info = _run_probe(client, ref, labels or {})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(info))
    base = BaseImage(
        ref=ref,
        id=image_id,
        python=info["python"],
        python_full=info["python_full"],
        machine=info["machine"],
        libc=(info["libc"][0], info["libc"][1]),
    )
    progress(f"Base {ref}: Python {base.python_full}, {base.machine}, {' '.join(base.libc)}")
    return base


def _run_probe(client: docker.DockerClient, ref: str, labels: Mapping[str, str]) -> dict:
    """Run the probe in a container labelled `anvyl.build=1`, removed afterwards."""
    container = client.containers.create(
        ref,
        entrypoint=["python3", "-c", _PROBE],
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
