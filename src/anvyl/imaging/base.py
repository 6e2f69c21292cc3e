"""The base image, without an engine: what it is, the probe it runs, the Debian base tarball.

Pulling, importing and probing on an engine is `anvyl.runtime.images`' job (the only place that
talks to Docker); this module holds the names, the probe script and the debootstrap steps.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

PROBE = (
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


def split_ref(ref: str) -> tuple[str, str | None]:
    """`repo:tag` → (repo, tag); a digest or a bare name is passed through."""
    if "@" in ref:
        return ref, None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = ref.rsplit(":", 1)
        return repository, tag
    return ref, "latest"


def packages_key() -> str:
    """A short name for the package list, so a changed list makes a new base."""
    return hashlib.sha256(",".join(DEBIAN_PACKAGES).encode()).hexdigest()[:8]


def debootstrap_tar(tar_path: Path, progress: Progress) -> None:
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


def debian_tar_path(cache_dir: Path) -> Path:
    """Where the Debian base's root file system tarball is kept (its name keys the packages)."""
    base_dir = cache_dir / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    return base_dir / f"debian-{DEBIAN_SUITE}-minbase-{packages_key()}.tar"


def debian_import_changes() -> list[str]:
    """The Dockerfile-like changes the engine applies when importing the Debian tarball."""
    return [
        f"ENV PATH={DEFAULT_PATH}",
        "ENV LANG=C.UTF-8",
        f"LABEL {LABEL_BUILD}.base={DEBIAN_SUITE}-minbase",
        'CMD ["python3"]',
    ]


def probe_cache_file(cache_dir: Path, image_id: str) -> Path:
    """Where the probe of image `image_id` is cached (an image id never changes its content)."""
    return cache_dir / "base" / f"probe-{image_id.replace(':', '-')}.json"


def base_from_probe(ref: str, image_id: str, info: Mapping[str, Any]) -> BaseImage:
    """The `BaseImage` that the probe's JSON describes."""
    return BaseImage(
        ref=ref,
        id=image_id,
        python=info["python"],
        python_full=info["python_full"],
        machine=info["machine"],
        libc=(info["libc"][0], info["libc"][1]),
    )
