"""Requirements for the image: Anvyl's `mlx` extra at the host's versions; platform tags."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from pathlib import Path

from anvyl.imaging.base import BaseImage
from anvyl.imaging.wheels import (
    KERNEL_SOURCE,
    WheelSet,
    kernel_build_key,
    kernel_source_files,
    kernel_wheel_unbuildable,
    pinned_requirements,
    platform_tags,
    runtime_requirements,
    with_kernel_wheel,
)

BOOKWORM = BaseImage(
    ref="anvyl/debian-base:bookworm",
    id="sha256:0",
    python="3.11",
    python_full="3.11.2",
    machine="x86_64",
    libc=("glibc", "2.36"),
)


def test_runtime_requirements_are_the_mlx_extra() -> None:
    names = {line.split(";")[0].split(">")[0].split("[")[0] for line in runtime_requirements()}
    assert {"mlx", "mlx-lm", "fastapi", "uvicorn", "prometheus-client", "tokenizers"} <= names
    assert "grpcio" not in names and "pytest" not in names


def test_every_requirement_is_pinned_to_the_host_version() -> None:
    pins = pinned_requirements(BOOKWORM)
    version = importlib.metadata.version
    assert f"mlx[cpu]=={version('mlx')}" in pins
    assert f"mlx-lm=={version('mlx-lm')}" in pins
    assert f"mlx-cpu=={version('mlx-cpu')}" in pins  # pulled in by the extra, pinned too
    assert f"numpy=={version('numpy')}" in pins
    assert all("==" in line for line in pins)
    assert len(pins) == len({line.split("==")[0].split("[")[0] for line in pins})


def test_top_level_only_pins() -> None:
    pins = pinned_requirements(BOOKWORM, transitive=False)
    # Exactly the `mlx` extra's own requirements for Linux (one pin each), nothing they pull in.
    names = {pin.split("==")[0].split("[")[0] for pin in pins}
    assert names == {
        "fastapi", "llguidance", "mlx", "mlx-lm", "numpy", "prometheus-client", "tokenizers",
        "uvicorn", "wsproto",
    }  # fmt: skip
    assert len(pins) == len(names)
    assert not any(line.startswith("starlette") for line in pins)  # fastapi's, not ours


def test_platform_tags_follow_glibc_and_arch() -> None:
    tags = platform_tags(BOOKWORM)
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_35_x86_64" in tags and "manylinux2014_x86_64" in tags
    arm = platform_tags(BaseImage("b", "sha256:1", "3.12", "3.12.8", "aarch64", ("glibc", "2.36")))
    assert all("x86_64" not in t for t in arm) and "manylinux_2_17_aarch64" in arm


def test_kernel_wheel_only_for_the_hosts_python_and_arch() -> None:
    """The kernel links the host's MLX build: other Pythons or architectures get no kernel."""
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = BaseImage("b", "sha256:0", "3.99", "3.99.0", platform.machine(), ("glibc", "2.99"))
    assert "Python 3.99" in (kernel_wheel_unbuildable(other) or "")
    arch = BaseImage("b", "sha256:0", host, host + ".0", "riscv64", ("glibc", "2.99"))
    assert kernel_wheel_unbuildable(arch) is not None
    old_libc = BaseImage("b", "sha256:0", host, host + ".0", platform.machine(), ("glibc", "2.17"))
    assert "glibc" in (kernel_wheel_unbuildable(old_libc) or "")


def test_kernel_build_key_follows_the_sources(tmp_path: Path) -> None:
    """Any change to the kernel's sources makes a new cache key (a rebuild)."""
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    base = BaseImage("b", "sha256:0", host, host + ".0", "x86_64", ("glibc", "2.36"))
    copy = tmp_path / "kernels"
    for file in kernel_source_files(KERNEL_SOURCE):
        dest = copy / file.relative_to(KERNEL_SOURCE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest)
    assert {p.name for p in kernel_source_files(copy)} >= {"qmm.cpp", "CMakeLists.txt"}
    before = kernel_build_key(copy, base)
    assert kernel_build_key(copy, base) == before
    (copy / "build").mkdir()
    (copy / "build" / "leftover.o").write_text("x")
    assert kernel_build_key(copy, base) == before
    with (copy / "src" / "qmm.cpp").open("a") as f:
        f.write("// changed\n")
    assert kernel_build_key(copy, base) != before


def test_with_kernel_wheel_pins_it(tmp_path: Path) -> None:
    """The kernel wheel joins the image's wheels, pinned to its version."""
    wheel = tmp_path / "anvyl_kernels-0.1.0-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"zip")
    out = with_kernel_wheel(WheelSet(("mlx==1",), (), ()), wheel)
    assert out.requirements == ("mlx==1", "anvyl-kernels==0.1.0")
    assert out.wheels == (wheel,) and len(out.sha256[0]) == 64
