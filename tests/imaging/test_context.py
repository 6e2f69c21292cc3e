"""The build context's pieces: Anvyl's own wheel and the packaged Dockerfile."""

from __future__ import annotations

import zipfile
from pathlib import Path

import anvyl
from anvyl.imaging.context import build_anvyl_wheel, dockerfile_text, package_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_anvyl_wheel_is_reproducible_and_complete(tmp_path: Path) -> None:
    first = build_anvyl_wheel(tmp_path / "a")
    second = build_anvyl_wheel(tmp_path / "b")
    assert first.name == f"anvyl-{anvyl.__version__}-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"anvyl-{anvyl.__version__}.dist-info/METADATA").decode()
        record = zf.read(f"anvyl-{anvyl.__version__}.dist-info/RECORD").decode()
    assert "anvyl/__init__.py" in names
    assert "anvyl/imaging/files/Dockerfile" in names
    assert not any(name.endswith(".pyc") or "__pycache__" in name for name in names)
    assert f"Version: {anvyl.__version__}" in metadata
    assert len(record.splitlines()) == len(names)
    expected = {
        "anvyl/" + p.relative_to(package_dir()).as_posix()
        for p in package_dir().rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert expected <= names


def test_repository_dockerfile_is_the_packaged_one() -> None:
    assert (REPO_ROOT / "image" / "Dockerfile").read_bytes() == dockerfile_text()


def test_dockerfile_keeps_its_contract() -> None:
    text = dockerfile_text().decode()
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert "FROM ${BASE_IMAGE}" in text
    assert "--no-index" in text
    assert "curl" not in text.replace("without curl", "").replace("No curl", "")
