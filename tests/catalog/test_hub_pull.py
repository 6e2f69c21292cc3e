"""`model pull` against a local stand-in for the Hub, with the real `huggingface_hub` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from arch_ggufs import ARCHS, gpt2_vocab, hf_weights, write_arch_gguf
from gguf import GGMLQuantizationType as QT
from hub_server import COMMIT, FakeHub, running

from anvyl.catalog import hub_pull
from anvyl.catalog.gguf_import import import_gguf
from anvyl.catalog.hub_download import Cancelled
from anvyl.catalog.hub_pull import Pulls, hub_token
from anvyl.catalog.hub_repo import parse_ref
from anvyl.errors import (
    AlreadyExists,
    FailedPrecondition,
    ImportFailed,
    InvalidArgument,
    NotFound,
    RuntimeUnavailable,
)

MLX_REPO, GGUF_REPO, BARE_REPO = "tiny-org/Tiny-Llama-mlx", "tiny-org/Tiny-GGUF", "tiny-org/bare"
SPLIT_REPO = "tiny-org/Split-GGUF"
ODD_REPO = "tiny-org/odd-arch"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An MLX repository (with copies a pull must skip), a GGUF one and a non-model one."""
    root = tmp_path_factory.mktemp("repos")
    arch, vocab = ARCHS["smollm"], gpt2_vocab()
    weights = hf_weights(arch, len(vocab["tokens"]))
    src = write_arch_gguf(root / "src.gguf", arch, vocab, weights)
    mlx = import_gguf(src, root / "mlx", model_id="tiny-mlx").path
    (mlx / "anvyl.json").unlink()
    (mlx / "pytorch_model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (mlx / "consolidated.safetensors").write_bytes(b"\0" * 2048)
    (mlx / "original").mkdir()
    (mlx / "original" / "params.json").write_text("{}")
    gg = root / "gguf"
    gg.mkdir()
    write_arch_gguf(gg / "Tiny-Q8_0.gguf", arch, vocab, weights, QT.Q8_0)
    write_arch_gguf(gg / "Tiny-Q4_K_M.gguf", arch, vocab, weights, QT.Q4_0)
    split = root / "split" / "Q4_K_M"
    split.mkdir(parents=True)
    write_arch_gguf(split / "Big-Q4_K_M.gguf", arch, vocab, weights, QT.Q8_0, split_max_tensors=12)
    (root / "split" / "Big-Q8_0.gguf").write_bytes((gg / "Tiny-Q8_0.gguf").read_bytes())
    odd = root / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    (odd / WEIGHTS).write_bytes(b"\0" * 4096)
    bare = root / "bare"
    bare.mkdir()
    (bare / "README.md").write_text("weights elsewhere")
    (bare / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    return {
        MLX_REPO: mlx,
        GGUF_REPO: gg,
        BARE_REPO: bare,
        SPLIT_REPO: root / "split",
        ODD_REPO: odd,
    }


@pytest.fixture
def hub(repos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake = FakeHub(dict(repos))
    with running(fake) as url:
        yield fake, url


def _pulls(tmp_path: Path, url: str) -> Pulls:
    return Pulls(tmp_path / "home", endpoint=url)


def _downloads(fake: FakeHub, name: str) -> list[str]:
    return [r for r in fake.requests if r.startswith("GET") and r.split()[1].endswith(name)]


def test_pull_mlx_repository(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    steps: list[tuple[str, float]] = []
    info = _pulls(tmp_path, url).pull(MLX_REPO, progress=lambda s, f: steps.append((s, f)))
    assert info.id == "tiny-llama-mlx"
    files = sorted(p.name for p in info.path.iterdir())
    assert files == sorted(
        ["anvyl.json", "config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json"]
    )
    assert not any("pytorch_model" in r or "consolidated" in r for r in fake.requests)
    record = json.loads((info.path / "anvyl.json").read_text())
    assert record["source_repo"] == MLX_REPO and record["source_revision"] == COMMIT
    assert record["source"] == f"hf.co/{MLX_REPO}@{COMMIT[:12]}"
    assert steps[-1] == ("done", 1.0)
    assert [f for _, f in steps] == sorted(f for _, f in steps)
    assert not (
        tmp_path / "home" / "models" / ".pulls" / f"tiny-org--Tiny-Llama-mlx@{COMMIT[:12]}"
    ).exists()

    from mlx_lm import generate, load

    model, tokenizer = load(str(info.path))
    generate(model, tokenizer, "hello", max_tokens=3)
    with pytest.raises(AlreadyExists, match="already exists"):
        _pulls(tmp_path, url).pull(MLX_REPO)


def test_pull_gguf_repository(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    _, url = hub
    steps: list[str] = []
    pulls = _pulls(tmp_path, url)
    info = pulls.pull(GGUF_REPO, progress=lambda s, f: steps.append(s))
    assert any("Tiny-Q4_K_M.gguf (Q4_K_M, the default" in s for s in steps)
    assert info.id == "tiny-q4_k_m-mlx"
    record = json.loads((info.path / "anvyl.json").read_text())
    assert record["source_repo"] == GGUF_REPO and record["source_format"] == "gguf"
    other = pulls.pull(f"{GGUF_REPO}:main", file="Tiny-Q8_0.gguf", name="tiny-q8")
    assert other.quantization == "q8_0"
    with pytest.raises(NotFound, match=r"no file 'nope.gguf'.*Tiny-Q8_0.gguf"):
        pulls.pull(GGUF_REPO, file="nope.gguf")


def test_pull_split_gguf(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    info = _pulls(tmp_path, url).pull(SPLIT_REPO)
    assert info.id == "big-q4_k_m-mlx" and info.quantization == "q8_0"
    parts = [r for r in fake.requests if r.startswith("GET") and "-of-00002.gguf" in r]
    assert len(parts) == 2
    assert not [r for r in fake.requests if "Big-Q8_0" in r]


def test_interrupted_pull_resumes(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    size = (fake.repos[MLX_REPO] / WEIGHTS).stat().st_size
    fake.cut_after[WEIGHTS] = size // 2
    pulls = _pulls(tmp_path, url)
    with pytest.raises(RuntimeUnavailable, match="pull again to resume"):
        pulls.pull(MLX_REPO)
    parts = list((tmp_path / "home" / "models" / ".pulls").rglob(f"{WEIGHTS}.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size <= size // 2
    kept = parts[0].stat().st_size
    del fake.cut_after[WEIGHTS]
    info = pulls.pull(MLX_REPO)
    assert _downloads(fake, WEIGHTS)[-1].endswith(f"bytes={kept}-")
    assert (info.path / WEIGHTS).read_bytes() == (fake.repos[MLX_REPO] / WEIGHTS).read_bytes()


def test_corrupted_file_is_detected(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    fake.corrupt.add(WEIGHTS)
    with pytest.raises(ImportFailed, match=f"{WEIGHTS} does not match the checksum"):
        _pulls(tmp_path, url).pull(MLX_REPO)
    models = tmp_path / "home" / "models"
    assert sorted(p.name for p in models.iterdir()) == [".pulls"]
    assert not list(models.rglob(f"{WEIGHTS}*"))


def test_unknown_repo_revision_and_unreachable_hub(
    hub: tuple[FakeHub, str], tmp_path: Path
) -> None:
    fake, url = hub
    pulls = _pulls(tmp_path, url)
    with pytest.raises(NotFound, match="no model repository tiny-org/missing on http"):
        pulls.pull("tiny-org/missing")
    with pytest.raises(NotFound, match="has no revision 'v9'"):
        pulls.pull(f"{MLX_REPO}:v9")
    with pytest.raises(InvalidArgument, match=r"not an MLX model: it has no config\.json"):
        pulls.pull(BARE_REPO)
    with pytest.raises(ImportFailed, match="no model class for architecture 'no-such-arch'"):
        pulls.pull(ODD_REPO)
    assert not [
        r
        for r in fake.requests
        if r.startswith("GET /tiny-org/odd-arch/resolve/") and r.split()[1].endswith(WEIGHTS)
    ]
    with pytest.raises(InvalidArgument, match="not a Hugging Face repository"):
        pulls.pull("../../etc")
    closed = Pulls(tmp_path / "home", endpoint="http://127.0.0.1:9")
    with pytest.raises(RuntimeUnavailable, match=r"cannot reach http://127\.0\.0\.1:9") as err:
        closed.pull(MLX_REPO)
    assert "\n" not in str(err.value)


def test_cancel_keeps_a_resumable_partial(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    fake.delay_per_chunk = 0.05
    pulls = _pulls(tmp_path, url)
    cancel = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pulls.pull(MLX_REPO, cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    pulls_dir = tmp_path / "home" / "models" / ".pulls"
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size > 0 for p in pulls_dir.rglob(f"{WEIGHTS}.part")):
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)
    cancel.set()
    worker.join(30)
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    (part,) = pulls_dir.rglob(f"{WEIGHTS}.part")
    kept = part.stat().st_size
    fake.delay_per_chunk = 0.0
    pulls.pull(MLX_REPO)
    assert _downloads(fake, WEIGHTS)[-1].endswith(f"bytes={kept}-")


def test_two_pulls_share_one_download(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, url = hub
    fake.delay_per_chunk = 0.02
    pulls = _pulls(tmp_path, url)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(pulls.pull(MLX_REPO))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1]
    assert len(_downloads(fake, WEIGHTS)) == 1


def test_free_disk_is_checked_first(
    hub: tuple[FakeHub, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = hub

    class Usage:
        free = 1 << 20

    monkeypatch.setattr(hub_pull.shutil, "disk_usage", lambda _p: Usage())
    with pytest.raises(FailedPrecondition, match="not enough disk space"):
        _pulls(tmp_path, url).pull(MLX_REPO)
    assert not _downloads(fake, WEIGHTS)


def test_token_from_environment_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert hub_token(tmp_path) is None
    (tmp_path / "hf_token").write_text("hf_file\n")
    assert hub_token(tmp_path) == "hf_file"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert hub_token(tmp_path) == "hf_env"


def test_parse_ref() -> None:
    assert parse_ref("a/b:v1").revision == "v1"
    assert parse_ref("https://huggingface.co/a/b").repo == "a/b"
    for bad in ("a", "a/b/c", "a/b:..", "a/b:-x", "a b/c"):
        with pytest.raises(InvalidArgument):
            parse_ref(bad)
