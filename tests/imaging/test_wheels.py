"""Requirements for the image: Anvyl's `mlx` extra at the host's versions; platform tags."""

from __future__ import annotations

import importlib.metadata

from anvyl.imaging.base import BaseImage
from anvyl.imaging.wheels import pinned_requirements, platform_tags, runtime_requirements

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
        "fastapi", "mlx", "mlx-lm", "prometheus-client", "tokenizers", "uvicorn", "wsproto"
    }  # fmt: skip
    assert len(pins) == len(names)
    assert not any(line.startswith("numpy") for line in pins)


def test_platform_tags_follow_glibc_and_arch() -> None:
    tags = platform_tags(BOOKWORM)
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_35_x86_64" in tags and "manylinux2014_x86_64" in tags
    arm = platform_tags(BaseImage("b", "sha256:1", "3.12", "3.12.8", "aarch64", ("glibc", "2.36")))
    assert all("x86_64" not in t for t in arm) and "manylinux_2_17_aarch64" in arm
