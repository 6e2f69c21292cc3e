"""The image's Python dependencies: pinned to the host's versions, downloaded on the host.

The model server's requirements are Anvyl's `mlx` extra. Each one, and everything it pulls in,
is pinned to the version installed next to the CLI that builds the image, so the image runs
what was tested here. `pip download` fetches wheels for the base image's Python version and
platform into `cache_dir/wheels/<python>-<arch>/`; a manifest per requirement set makes a
second build need no network at all.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anvyl.digests import file_sha256
from anvyl.imaging.base import BaseImage
from anvyl.imaging.errors import ImageBuildError

try:  # `packaging` comes with the model-server extra; pip always vendors a copy
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pragma: no cover - a CLI-only install
    from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]

RUNTIME_EXTRA = "mlx"
# Used only when Anvyl runs from a source tree that is not installed (no metadata to read).
FALLBACK_REQUIREMENTS = (
    "mlx[cpu]; platform_system == 'Linux'",
    "mlx-lm",
    "fastapi",
    "uvicorn",
    "prometheus-client",
    "tokenizers",
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WheelSet:
    """The wheels for one image: what to install and the files that satisfy it."""

    requirements: tuple[str, ...]  # lines of requirements.txt, exact pins
    wheels: tuple[Path, ...]  # cached wheel files
    sha256: tuple[str, ...]  # one per wheel, same order


def marker_environment(base: BaseImage) -> dict[str, str]:
    """PEP 508 marker values of the image's interpreter (Linux, CPython)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": base.python_full,
        "os_name": "posix",
        "platform_machine": base.machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": base.python_full,
        "python_version": base.python,
        "sys_platform": "linux",
    }


def runtime_requirements() -> list[str]:
    """The model server's top-level requirements: Anvyl's `mlx` extra (markers kept)."""
    try:
        declared = importlib.metadata.requires("anvyl") or []
    except importlib.metadata.PackageNotFoundError:
        return list(FALLBACK_REQUIREMENTS)
    found = []
    for line in declared:
        req = Requirement(line)
        if req.marker is not None and _mentions_extra(req.marker, RUNTIME_EXTRA):
            found.append(line)
    return found or list(FALLBACK_REQUIREMENTS)


def _mentions_extra(marker: Marker, extra: str) -> bool:
    """True when `marker` can hold with `extra` and not without it."""
    on = any(marker.evaluate({"extra": extra, "platform_system": s}) for s in ("Linux", "Darwin"))
    off = any(marker.evaluate({"extra": "", "platform_system": s}) for s in ("Linux", "Darwin"))
    return on and not off


def pinned_requirements(base: BaseImage, *, transitive: bool = True) -> list[str]:
    """Requirements for the image, each pinned to the host's installed version when there is one.

    With `transitive`, everything the top-level requirements pull in (for the image's
    interpreter) is pinned as well.
    """
    env = marker_environment(base)
    pins: dict[str, tuple[str, set[str]]] = {}  # name → (version or "", extras)
    order: list[str] = []
    queue: list[Requirement] = []
    for line in runtime_requirements():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": RUNTIME_EXTRA}):
            queue.append(req)
    while queue:
        req = queue.pop(0)
        name = canonicalize_name(req.name)
        version = _installed_version(req.name)
        if name in pins:
            _, extras = pins[name]
            if req.extras <= extras:
                continue
            extras |= set(req.extras)
        else:
            pins[name] = (version or "", set(req.extras))
            order.append(name)
        if not transitive or version is None:
            continue
        for dep in importlib.metadata.requires(req.name) or []:
            dep_req = Requirement(dep)
            if dep_req.marker is not None and not any(
                dep_req.marker.evaluate({**env, "extra": extra})
                for extra in (sorted(req.extras) or [""])
            ):
                continue
            queue.append(dep_req)
    lines = []
    for name in order:
        version, extras = pins[name]
        extra = f"[{','.join(sorted(extras))}]" if extras else ""
        lines.append(f"{name}{extra}=={version}" if version else f"{name}{extra}")
    return lines


def _installed_version(name: str) -> str | None:
    """The version of `name` installed next to Anvyl, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def platform_tags(base: BaseImage) -> list[str]:
    """pip `--platform` tags the base image accepts, newest glibc first."""
    arch = base.machine
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(base.glibc_minor, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch in ("x86_64", "i686"):
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    tags.append("any")
    return tags


def ensure_wheels(
    base: BaseImage, *, cache_dir: Path, progress: Progress, ca_bundle: Path | None = None
) -> WheelSet:
    """The wheels the image needs, from the cache or downloaded with `pip download`."""
    wheel_dir = cache_dir / "wheels" / f"{base.python}-{base.machine}"
    manifests = wheel_dir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    pinned = pinned_requirements(base)
    for requirements in (pinned, pinned_requirements(base, transitive=False)):
        key = _manifest_key(base, requirements)
        cached = _load_manifest(manifests / f"{key}.json", wheel_dir)
        if cached is not None:
            progress(f"Wheels for Python {base.python} {base.machine}: {len(cached.wheels)} cached")
            return cached
        try:
            wheel_set = _download(base, requirements, wheel_dir, progress, ca_bundle)
        except ImageBuildError as exc:
            if requirements is pinned and len(pinned) > len(runtime_requirements()):
                progress(f"Exact pins of every dependency failed ({exc.message.splitlines()[0]});")
                progress("retrying with the top-level requirements pinned only")
                continue
            raise
        _save_manifest(manifests / f"{key}.json", wheel_set)
        return wheel_set
    raise AssertionError("unreachable")


def _manifest_key(base: BaseImage, requirements: list[str]) -> str:
    """A name for one requirement set on one interpreter and platform."""
    blob = json.dumps([base.python, base.machine, platform_tags(base), requirements])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_manifest(path: Path, wheel_dir: Path) -> WheelSet | None:
    """The cached wheel set of `path`, or None when the manifest or any wheel is missing."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    wheels = tuple(wheel_dir / entry["file"] for entry in data["wheels"])
    if not all(w.is_file() for w in wheels):
        return None
    return WheelSet(
        requirements=tuple(data["requirements"]),
        wheels=wheels,
        sha256=tuple(entry["sha256"] for entry in data["wheels"]),
    )


def _save_manifest(path: Path, wheel_set: WheelSet) -> None:
    """Record a downloaded wheel set so the next build needs no network."""
    data = {
        "requirements": list(wheel_set.requirements),
        "wheels": [
            {"file": w.name, "sha256": s}
            for w, s in zip(wheel_set.wheels, wheel_set.sha256, strict=True)
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _download(
    base: BaseImage,
    requirements: list[str],
    wheel_dir: Path,
    progress: Progress,
    ca_bundle: Path | None,
) -> WheelSet:
    """`pip download` the requirements for the base image's interpreter into `wheel_dir`."""
    progress(
        f"Downloading wheels for Python {base.python} {base.machine} "
        f"({len(requirements)} requirements)"
    )
    abi = "cp" + base.python.replace(".", "")
    with tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".download-") as tmp:
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n")
        dest = Path(tmp) / "dest"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--dest",
            str(dest),
            "--only-binary=:all:",
            "--python-version",
            base.python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            "--find-links",
            str(wheel_dir),
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
            "-r",
            str(req_file),
        ]
        for tag in platform_tags(base):
            argv += ["--platform", tag]
        if ca_bundle is not None:
            argv += ["--cert", str(ca_bundle)]
        _run_pip(argv, progress)
        wheels = []
        digests = []
        for file in sorted(dest.glob("*.whl")):
            target = wheel_dir / file.name
            if not target.exists():
                file.replace(target)
            wheels.append(target)
            digests.append(file_sha256(target))
    if not wheels:
        raise ImageBuildError("pip download produced no wheels")
    progress(f"Downloaded {len(wheels)} wheels into {wheel_dir}")
    return WheelSet(tuple(requirements), tuple(wheels), tuple(digests))


def _run_pip(
    argv: list[str],
    progress: Progress,
    *,
    env: dict[str, str] | None = None,
    what: str = "pip download",
) -> None:
    """Run pip (no shell), streaming its lines; on failure raise with the output's tail."""
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise ImageBuildError(f"cannot run pip: {exc}") from exc
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            progress(f"  {line}")
        code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-25:])
        raise ImageBuildError(
            f"{what} failed (exit status {code}); a TLS-intercepting proxy needs "
            f"--ca-bundle PATH:\n{tail}"
        )


# --------------------------------------------------------------------------- the kernel wheel

KERNEL_PACKAGE = "anvyl-kernels"
KERNEL_SOURCE = Path(__file__).resolve().parents[3] / "kernels"


def kernel_source_dir() -> Path | None:
    """The `kernels/` folder of the source tree Anvyl runs from, or None (installed wheel)."""
    return KERNEL_SOURCE if (KERNEL_SOURCE / "pyproject.toml").is_file() else None


def kernel_source_files(source: Path) -> list[Path]:
    """The files that make the kernel wheel (no build leftovers), sorted."""
    files = [source / name for name in ("CMakeLists.txt", "pyproject.toml", "setup.py")]
    for folder in ("src", "anvyl_kernels"):
        files += sorted(p for p in (source / folder).rglob("*") if p.suffix in _KERNEL_SUFFIXES)
    return [f for f in files if f.is_file()]


_KERNEL_SUFFIXES = {".cpp", ".h", ".py"}


def kernel_build_key(source: Path, base: BaseImage) -> str:
    """A hash of the kernel's sources and of what its binary depends on (Python, arch, MLX)."""
    digest = hashlib.sha256()
    digest.update(f"{base.python} {base.machine} mlx {_installed_version('mlx')}\n".encode())
    for file in kernel_source_files(source):
        digest.update(f"{file.relative_to(source).as_posix()} {file_sha256(file)}\n".encode())
    return digest.hexdigest()[:16]


def kernel_wheel_unbuildable(base: BaseImage) -> str | None:
    """Why the host cannot build a kernel wheel for `base`, or None when it can."""
    host_python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if base.python != host_python or base.machine != platform.machine():
        return f"the image runs Python {base.python} {base.machine}, this host {host_python}"
    name, version = platform.libc_ver()
    if (
        name != "glibc"
        or not version.startswith("2.")
        or int(version.split(".")[1]) > (base.glibc_minor)
    ):
        return f"the image's glibc 2.{base.glibc_minor} is older than this host's {version}"
    if _installed_version("mlx") is None:
        return "mlx is not installed next to Anvyl"
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        return f"no {' or '.join(missing)} on this host (scripts/setup.sh installs them)"
    return None


def ensure_kernel_wheel(
    base: BaseImage, *, cache_dir: Path, progress: Progress, ca_bundle: Path | None = None
) -> Path | None:
    """Anvyl's CPU kernel as a wheel for `base`, built here once per source hash; None if not.

    The extension links against the host's MLX, which the image pins to the same version, so it
    is built with the host's interpreter and only for an image with the same Python and
    architecture. A wheel that fails to build or to pass its self-check is left out: the image
    still builds and its model server uses MLX's own matmuls.
    """
    source = kernel_source_dir()
    if source is None:
        return None
    reason = kernel_wheel_unbuildable(base)
    if reason is not None:
        progress(f"Not building Anvyl's CPU kernel: {reason}")
        return None
    out_dir = cache_dir / "kernels" / kernel_build_key(source, base)
    cached = sorted(out_dir.glob("*.whl"))
    if cached:
        progress(f"Anvyl's CPU kernel: cached {cached[0].name}")
        return cached[0]
    progress("Building Anvyl's CPU kernel (kernels/, about a minute)")
    tmp_root = cache_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="kernel-") as tmp:
        try:
            wheel = _build_kernel_wheel(source, Path(tmp), cache_dir, progress, ca_bundle)
        except (ImageBuildError, OSError, subprocess.SubprocessError) as exc:
            first = str(getattr(exc, "message", exc)).splitlines()[0]
            progress(f"Anvyl's CPU kernel left out of the image: {first}")
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / wheel.name
        shutil.copyfile(wheel, out_dir / f".{wheel.name}")
        (out_dir / f".{wheel.name}").replace(target)
    return target


def with_kernel_wheel(wheels: WheelSet, kernel: Path) -> WheelSet:
    """`wheels` plus the kernel wheel, pinned to its version in the requirements."""
    version = kernel.name.split("-")[1]
    return WheelSet(
        requirements=(*wheels.requirements, f"{KERNEL_PACKAGE}=={version}"),
        wheels=(*wheels.wheels, kernel),
        sha256=(*wheels.sha256, file_sha256(kernel)),
    )


def _build_kernel_wheel(
    source: Path, tmp: Path, cache_dir: Path, progress: Progress, ca_bundle: Path | None
) -> Path:
    """Build and self-check the kernel wheel in the folder `tmp`; return its path there."""
    tools = _kernel_build_tools(source, cache_dir, progress, ca_bundle)
    src = tmp / "src"
    for file in kernel_source_files(source):
        dest = src / file.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest)
    env = {**os.environ, "PYTHONPATH": str(tools)}
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    argv += ["--disable-pip-version-check", "-w", str(tmp / "dist"), str(src)]
    _run_pip(argv, progress, env=env, what="building the kernel wheel")
    wheels = sorted((tmp / "dist").glob("*.whl"))
    if not wheels:
        raise ImageBuildError("pip wheel produced no kernel wheel")
    check_dir = tmp / "check"
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(check_dir)]
    argv += ["--disable-pip-version-check", "-q", str(wheels[0])]
    _run_pip(argv, progress, what="installing the kernel wheel for its self-check")
    check = (
        "import anvyl_kernels; from anvyl.modelserver.kernel import _self_check;"
        "_self_check(anvyl_kernels); print('simd', anvyl_kernels.simd())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "PYTHONPATH": str(check_dir)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ImageBuildError(f"the kernel wheel failed its self-check: {tail[0]}")
    progress(f"Anvyl's CPU kernel built and checked ({proc.stdout.strip()})")
    return wheels[0]


def _kernel_build_tools(
    source: Path, cache_dir: Path, progress: Progress, ca_bundle: Path | None
) -> Path:
    """A folder with the kernel's build requirements but MLX (nanobind at its pin, setuptools)."""
    pyproject = tomllib.loads((source / "pyproject.toml").read_text())
    requires = [
        r
        for r in pyproject["build-system"]["requires"]
        if canonicalize_name(Requirement(r).name) != "mlx"
    ]
    key = hashlib.sha256(json.dumps(sorted(requires)).encode()).hexdigest()[:12]
    tools = cache_dir / "kernels" / f"build-tools-{key}"
    if (tools / ".complete").exists():
        return tools
    progress(f"Installing the kernel's build tools: {' '.join(requires)}")
    shutil.rmtree(tools, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "install", "--target", str(tools), "-q"]
    argv += ["--disable-pip-version-check", *requires]
    if ca_bundle is not None:
        argv += ["--cert", str(ca_bundle)]
    _run_pip(argv, progress, what="installing the kernel's build tools")
    (tools / ".complete").touch()
    return tools
