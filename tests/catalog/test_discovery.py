"""Discovery across Anvyl's store, LM Studio and the Hugging Face cache; resolve; remove."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import pytest

from anvyl.catalog.discovery import (
    discover_models,
    huggingface_cache,
    lmstudio_roots,
    remove_model,
    resolve_model,
)
from anvyl.catalog.model_info import describe_model, estimate_memory
from anvyl.errors import InvalidArgument, NotFound, PermissionDenied

CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def make_mlx_dir(path: Path, *, bits: int | None = None, model_type: str = "llama") -> Path:
    """A small real MLX directory: config.json and a safetensors file (quantized when `bits`)."""
    path.mkdir(parents=True)
    weight = mx.ones((128, 64), dtype=mx.float16)
    norm = mx.ones((64,), dtype=mx.float16)
    config = {**CONFIG, "model_type": model_type}
    tensors = {"model.norm.weight": norm}
    if bits:
        q, scales, biases = mx.quantize(weight, group_size=32, bits=bits)
        tensors |= {"lm_head.weight": q, "lm_head.scales": scales, "lm_head.biases": biases}
        config["quantization"] = {"group_size": 32, "bits": bits}
    else:
        tensors["lm_head.weight"] = weight
    mx.save_safetensors(str(path / "model.safetensors"), tensors)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME at tmp_path with all three layouts populated; returns ANVYL_HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    anvyl_home = tmp_path / ".anvyl"
    make_mlx_dir(anvyl_home / "models" / "tiny-q4-mlx", bits=4)
    (anvyl_home / "models" / ".tiny.importing-1234").mkdir()  # a staging dir: ignored
    lms = tmp_path / ".lmstudio" / "models"
    make_mlx_dir(lms / "mlx-community" / "Qwen2.5-0.5B-Instruct-4bit", bits=4, model_type="qwen2")
    make_mlx_dir(
        tmp_path / ".cache" / "lm-studio" / "models" / "someone" / "Phi-3 Mini (8bit)", bits=8
    )
    gguf_only = lms / "lmstudio-community" / "Llama-GGUF"
    gguf_only.mkdir(parents=True)
    (gguf_only / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    hub = tmp_path / ".cache" / "huggingface" / "hub"
    repo = hub / "models--mlx-community--SmolLM2-360M-Instruct"
    make_mlx_dir(repo / "snapshots" / "abc123")
    make_mlx_dir(repo / "snapshots" / "old999")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (hub / "models--bert-base-uncased" / "snapshots" / "r1").mkdir(parents=True)  # not MLX
    return anvyl_home


def test_roots_follow_home_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_home: Path
) -> None:
    assert lmstudio_roots()[0] == tmp_path / ".lmstudio" / "models"
    assert huggingface_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert huggingface_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub2"))
    assert huggingface_cache() == tmp_path / "hub2"


def test_discovers_the_three_layouts(fake_home: Path, tmp_path: Path) -> None:
    models = {m.id: m for m in discover_models(fake_home)}
    assert sorted(models) == [
        "phi-3-mini-8bit-mlx",
        "qwen2.5-0.5b-instruct-4bit-mlx",
        "smollm2-360m-instruct-mlx",
        "tiny-q4-mlx",
    ]
    tiny = models["tiny-q4-mlx"]
    assert (tiny.source, tiny.architecture, tiny.quantization) == ("anvyl", "llama", "4bit")
    assert tiny.parameters == 128 * 64 + 64  # packed 4-bit weights unpacked
    assert tiny.context_length == 2048
    assert tiny.size_bytes == sum(f.stat().st_size for f in tiny.path.iterdir())
    qwen = models["qwen2.5-0.5b-instruct-4bit-mlx"]
    assert (qwen.source, qwen.architecture) == ("lmstudio", "qwen2")
    phi = models["phi-3-mini-8bit-mlx"]
    assert (phi.source, phi.quantization, phi.parameters) == ("lmstudio", "8bit", 128 * 64 + 64)
    smol = models["smollm2-360m-instruct-mlx"]
    assert smol.source == "huggingface" and smol.quantization == "fp16"
    assert smol.path.name == "abc123"  # the snapshot refs/main names


def test_memory_estimate_formula(fake_home: Path) -> None:
    info = resolve_model(fake_home, "tiny-q4-mlx")
    kv_per_token = 2 * 2 * 2 * 16 * 2  # K and V, layers, kv heads, head_dim, fp16
    assert info.kv_bytes_per_token == kv_per_token
    assert info.memory_bytes == estimate_memory(info.weights_bytes, kv_per_token, 2048)
    assert info.estimate_memory(8192) > info.memory_bytes


def test_colliding_names_get_publisher_prefix(fake_home: Path, tmp_path: Path) -> None:
    make_mlx_dir(tmp_path / ".lmstudio" / "models" / "other-org" / "Qwen2.5-0.5B-Instruct-4bit")
    ids = [m.id for m in discover_models(fake_home)]
    assert "qwen2.5-0.5b-instruct-4bit-mlx" in ids
    assert "other-org-qwen2.5-0.5b-instruct-4bit-mlx" in ids
    assert len(ids) == len(set(ids))


def test_explicit_roots(fake_home: Path, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere"
    make_mlx_dir(extra / "pub" / "Extra-Model")
    models = discover_models(fake_home, [("lmstudio", extra)], lmstudio=[], hf_cache=tmp_path / "x")
    assert sorted(m.id for m in models) == ["extra-model-mlx", "tiny-q4-mlx"]


def test_broken_dirs_are_skipped(fake_home: Path) -> None:
    broken = fake_home / "models" / "broken-mlx"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 4)
    assert "broken-mlx" not in [m.id for m in discover_models(fake_home)]
    with pytest.raises(InvalidArgument):
        describe_model(broken, model_id="broken-mlx", source="anvyl")


def test_resolve_suggests_close_matches(fake_home: Path) -> None:
    assert resolve_model(fake_home, "smollm2-360m-instruct-mlx").source == "huggingface"
    with pytest.raises(NotFound, match="did you mean smollm2-360m-instruct-mlx"):
        resolve_model(fake_home, "smollm2-360m-mlx")
    with pytest.raises(NotFound, match="model list"):
        resolve_model(fake_home, "zzzzzzzz")


def test_resolve_with_no_models_says_how_to_import(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="--bundled smollm2"):
        resolve_model(tmp_path, "anything-mlx", lmstudio=[], hf_cache=tmp_path / "none")


@pytest.mark.parametrize(
    "bad",
    [
        "../etc",
        "a/b",
        "a\\b",
        "..",
        "x..y",
        "/abs",
        "model;rm -rf /",
        "m$(id)",
        "m`id`",
        "m|cat",
        "m&",
        "m>x",
        "Upper-MLX",
        "-leading",
        ".hidden",
        "sp ace",
        "",
        "a" * 129,
        "naïve",
    ],
)
def test_hostile_ids_are_refused(fake_home: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve_model(fake_home, bad)
    with pytest.raises(InvalidArgument):
        remove_model(fake_home, bad)


def test_remove_imported_model(fake_home: Path) -> None:
    removed = remove_model(fake_home, "tiny-q4-mlx")
    assert removed.id == "tiny-q4-mlx"
    assert not (fake_home / "models" / "tiny-q4-mlx").exists()
    assert [p.name for p in (fake_home / "models").iterdir()] == [".tiny.importing-1234"]
    with pytest.raises(NotFound):
        remove_model(fake_home, "tiny-q4-mlx")


def test_remove_linked_model_keeps_the_target(fake_home: Path, tmp_path: Path) -> None:
    target = make_mlx_dir(tmp_path / "outside" / "kept")
    os.symlink(target, fake_home / "models" / "linked-mlx")
    remove_model(fake_home, "linked-mlx")
    assert not (fake_home / "models" / "linked-mlx").is_symlink()
    assert (target / "config.json").is_file()


def test_remove_refuses_models_anvyl_did_not_import(fake_home: Path) -> None:
    with pytest.raises(PermissionDenied, match="lmstudio"):
        remove_model(fake_home, "qwen2.5-0.5b-instruct-4bit-mlx")
    with pytest.raises(PermissionDenied, match="huggingface"):
        remove_model(fake_home, "smollm2-360m-instruct-mlx")
    assert resolve_model(fake_home, "smollm2-360m-instruct-mlx").path.is_dir()
