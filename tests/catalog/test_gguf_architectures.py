"""Every supported architecture and quantization type: exact tensors, exact config, real logits.

For each architecture the test writes a small GGUF file from random Hugging Face weights as
llama.cpp's converter would, imports it, and checks that (1) every converted tensor, dequantized,
equals the `gguf` package's dequantization of the same tensor, (2) mlx-lm loads the import and
its logits equal those of mlx-lm's own model class loading the same weights under the Hugging
Face config.json the real model has, and (3) it generates.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from arch_ggufs import (
    ARCHS,
    HIDDEN,
    MULTILINGUAL,
    Arch,
    gguf_reference_weights,
    gguf_tensor_name,
    gpt2_vocab,
    hf_weights,
    spm_vocab,
    to_gguf_value,
    write_arch_gguf,
)
from gguf import GGMLQuantizationType as QT

from anvyl.catalog.gguf_import import import_gguf
from anvyl.catalog.gguf_quants import EXACT_TYPES, MLX_BITS
from anvyl.errors import ImportFailed

PROMPT = [(7 * i + 3) % 250 + 3 for i in range(48)]  # long enough for rope scaling and windows


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return spm_vocab(tmp_path_factory.mktemp("spm"))


def _vocab(arch: Arch, spm: dict) -> dict:
    return gpt2_vocab() if arch.tokenizer.startswith("gpt2") else spm


def _reference_dir(tmp: Path, arch: Arch, weights: dict[str, np.ndarray]) -> Path:
    """The Hugging Face form: config.json and float32 weights, for mlx-lm's own loader."""
    out = tmp / f"{arch.name}-reference"
    out.mkdir()
    vocab = weights["model.embed_tokens.weight"].shape[0]
    (out / "config.json").write_text(json.dumps({**arch.hf_config, "vocab_size": vocab}))
    mx.save_safetensors(
        str(out / "model.safetensors"), {k: mx.array(v) for k, v in weights.items()}
    )
    return out


def _logits(model_dir: Path) -> np.ndarray:
    from mlx_lm.utils import load_model

    model, _ = load_model(model_dir)
    return np.array(model(mx.array([PROMPT])).astype(mx.float32))[0]


def _assert_tensors_match(arch: Arch, src: Path, model_dir: Path, tolerance: float) -> None:
    """Each imported tensor, dequantized by MLX, against gguf's dequantization of the file."""
    converted = mx.load(str(model_dir / "model.safetensors"))
    reference = gguf_reference_weights(arch, src)
    seen: set[str] = set()
    for name, expected in reference.items():
        module = name.rpartition(".")[0]
        if f"{module}.scales" in converted and name.endswith(".weight"):
            w, s, b = (converted[f"{module}.{k}"] for k in ("weight", "scales", "biases"))
            bits = 32 * w.shape[-1] // (s.shape[-1] * 32)
            actual = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), 32, bits)
            seen |= {f"{module}.scales", f"{module}.biases"}
        else:
            actual = converted[name].astype(mx.float32)
        seen.add(name)
        diff = float(np.max(np.abs(np.array(actual) - expected)))
        bound = tolerance * float(np.ptp(expected)) if tolerance else 0.0
        assert diff <= bound + 1e-6, f"{name}: max difference {diff} > {bound}"
    assert seen == set(converted), sorted(set(converted) - seen)


@pytest.mark.parametrize("name", list(ARCHS))
def test_architecture_config_is_exact(tmp_path: Path, spm: dict, name: str) -> None:
    arch = ARCHS[name]
    vocab = _vocab(arch, spm)
    weights = hf_weights(arch, len(vocab["tokens"]))
    src = write_arch_gguf(tmp_path / f"{name}.gguf", arch, vocab, weights)
    info = import_gguf(src, tmp_path / "models" / f"{name}-mlx", model_id=f"{name}-mlx")
    assert info.architecture == arch.hf_config["model_type"]
    _assert_tensors_match(arch, src, info.path, 0.0)
    config = json.loads((info.path / "config.json").read_text())
    for key, value in arch.hf_config.items():
        if key != "rope_scaling":
            assert config.get(key) == pytest.approx(value), key
    expected = _logits(_reference_dir(tmp_path, arch, weights))
    actual = _logits(info.path)
    np.testing.assert_allclose(actual, expected, atol=2e-4, rtol=1e-4)

    from mlx_lm import generate, load

    model, tokenizer = load(str(info.path))
    generate(model, tokenizer, "hello", max_tokens=4)


def _kquant_tensor(rng: np.random.Generator, shape: tuple[int, int], qtype: QT) -> np.ndarray:
    """Random K-quant blocks (every bit pattern), with small finite float16 scales."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    raw = rng.integers(0, 256, (rows, cols // block_elems, block_bytes), dtype=np.uint8)
    scales = (np.abs(rng.standard_normal((rows, cols // block_elems, 2))) * 2e-3).astype(np.float16)
    at = [208] if qtype == QT.Q6_K else [0, 2]
    for k, pos in enumerate(at):
        raw[:, :, pos : pos + 2] = scales[:, :, k : k + 1].view(np.uint8)
    return raw.reshape(rows, -1)


def _k_blocks(rng: np.random.Generator, value: np.ndarray, qtype: QT) -> np.ndarray:
    """Q6_K blocks of `value` (a simple quantizer), or random Q4_K/Q5_K blocks."""
    if qtype != QT.Q6_K:
        return _kquant_tensor(rng, value.shape, qtype)
    rows = value.shape[0]
    x = value.reshape(-1, 16, 16).astype(np.float32)  # 256-value blocks of 16 sub-blocks
    scale = np.abs(x).max(axis=2) / 31
    d = (scale.max(axis=1, keepdims=True) / 127).astype(np.float16)
    sc = np.rint(scale / np.maximum(d.astype(np.float32), 1e-12)).astype(np.int8)
    step = np.maximum(d.astype(np.float32) * sc, 1e-12)[:, :, None]
    q = (np.clip(np.rint(x / step), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    q1, q2, q3, q4 = (q[:, :, k] for k in range(4))
    ql = np.concatenate([(q1 & 15) | ((q3 & 15) << 4), (q2 & 15) | ((q4 & 15) << 4)], axis=2)
    qh = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    blocks = np.concatenate(
        [ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8), d.view(np.uint8)], axis=1
    )
    return blocks.reshape(rows, -1)


def _q4_k_m(arch: Arch, weights: dict[str, np.ndarray], seed: int) -> dict:
    """A Q4_K_M-like mix: Q6_K for v, down and the output head, Q4_K elsewhere."""
    rng = np.random.default_rng(seed)
    raw = {}
    for name, value in weights.items():
        if value.ndim != 2:
            continue
        six = any(k in name for k in ("v_proj", "down_proj", "lm_head", "qkv_proj"))
        qtype = QT.Q6_K if six else QT.Q4_K
        raw[gguf_tensor_name(arch, name)] = (_kquant_tensor(rng, value.shape, qtype), qtype)
    return raw


LEGACY = [QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1]
K_QUANTS = [QT.Q4_K, QT.Q5_K, QT.Q6_K]


@pytest.mark.parametrize("qtype", [*LEGACY, *K_QUANTS], ids=lambda q: q.name)
@pytest.mark.parametrize("name", list(ARCHS))
def test_quantization_types(tmp_path: Path, spm: dict, name: str, qtype: QT) -> None:
    arch = ARCHS[name]
    vocab = _vocab(arch, spm)
    weights = hf_weights(arch, len(vocab["tokens"]), seed=1)
    raw = None
    if qtype in K_QUANTS:  # the gguf package cannot quantize to K-quants
        rng = np.random.default_rng(3)
        raw = {
            gguf_tensor_name(arch, n): (_k_blocks(rng, to_gguf_value(arch, n, v), qtype), qtype)
            for n, v in weights.items()
            if v.ndim == 2
        }
    src = write_arch_gguf(
        tmp_path / "q.gguf", arch, vocab, weights, QT.F32 if raw else qtype, raw, _ft(qtype)
    )
    info = import_gguf(src, tmp_path / "out", model_id="q-mlx")
    labels = {QT.Q4_K: "q4_k_m", QT.Q5_K: "q5_k_m"}
    assert info.quantization == labels.get(qtype, qtype.name.lower())
    exact = qtype.name in EXACT_TYPES
    _assert_tensors_match(arch, src, info.path, 0.0 if exact else Q6_K_BOUND)
    reference = gguf_reference_weights(arch, src)
    expected = _logits(_reference_dir(tmp_path, arch, reference))
    actual = _logits(info.path)
    assert np.isfinite(actual).all()
    if exact:
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(actual, expected, atol=2e-3 * max(scale, 1.0))
    else:
        corr = [np.corrcoef(a, e)[0, 1] for a, e in zip(actual, expected, strict=True)]
        assert min(corr) >= 0.999, corr


def _ft(qtype: QT) -> int | None:
    return {QT.Q4_K: 15, QT.Q5_K: 17, QT.Q6_K: 18}.get(qtype)


Q6_K_BOUND = 1.001 / 510  # of each group's range, float32 rounding included


def test_scale_dtypes_and_bits(tmp_path: Path) -> None:
    arch = ARCHS["llama3"]
    vocab = gpt2_vocab()
    weights = hf_weights(arch, len(vocab["tokens"]))
    src = write_arch_gguf(
        tmp_path / "m.gguf", arch, vocab, weights, raw=_q4_k_m(arch, weights, seed=4), file_type=15
    )
    info = import_gguf(src, tmp_path / "out", model_id="m-mlx")
    config = json.loads((info.path / "config.json").read_text())
    q = config["quantization"]
    assert q["model.layers.0.self_attn.q_proj"]["bits"] == 4  # Q4_K, exact
    assert q["model.layers.0.self_attn.v_proj"]["bits"] == 8  # Q6_K, requantized
    assert q["lm_head"]["bits"] == 8
    assert config["rope_scaling"]["rope_type"] == "llama3"
    assert config["rope_scaling"]["factor"] == 32.0
    assert config["rope_scaling"]["low_freq_factor"] == pytest.approx(1.0)
    assert config["rope_scaling"]["high_freq_factor"] == pytest.approx(4.0)
    tensors = mx.load(str(info.path / "model.safetensors"))
    assert tensors["model.layers.0.self_attn.q_proj.scales"].dtype == mx.float32
    assert set(MLX_BITS) - EXACT_TYPES == {"Q6_K"}
    assert json.loads((info.path / "anvyl.json").read_text())["source_architecture"] == "llama"
    assert info.quantization == "q4_k_m"  # the file_type the writer recorded
    _assert_tensors_match(arch, src, info.path, Q6_K_BOUND)


def test_legacy_types_keep_exact_float16_scales(tmp_path: Path) -> None:
    arch = ARCHS["qwen2"]
    vocab = gpt2_vocab()
    weights = hf_weights(arch, len(vocab["tokens"]))
    src = write_arch_gguf(tmp_path / "m.gguf", arch, vocab, weights, QT.Q5_1)
    info = import_gguf(src, tmp_path / "out", model_id="m-mlx")
    tensors = mx.load(str(info.path / "model.safetensors"))
    assert tensors["model.layers.0.mlp.up_proj.scales"].dtype == mx.float16
    assert json.loads((info.path / "config.json").read_text())["quantization"]["bits"] == 5


def test_split_file_is_imported_from_its_first_part(tmp_path: Path) -> None:
    arch = ARCHS["qwen2"]
    vocab = gpt2_vocab()
    weights = hf_weights(arch, len(vocab["tokens"]))
    write_arch_gguf(tmp_path / "s.gguf", arch, vocab, weights, QT.Q8_0, split_max_tensors=8)
    parts = sorted(p.name for p in tmp_path.glob("s-*.gguf"))
    assert len(parts) == 4 and parts[0] == "s-00001-of-00004.gguf"
    info = import_gguf(tmp_path / parts[0], tmp_path / "out", model_id="s-mlx")
    expected = _logits(_reference_dir(tmp_path, arch, _reference_of_parts(arch, tmp_path, parts)))
    np.testing.assert_allclose(_logits(info.path), expected, atol=2e-3)
    with pytest.raises(ImportFailed, match="import its first part"):
        import_gguf(tmp_path / parts[1], tmp_path / "out2", model_id="s2-mlx")
    (tmp_path / parts[3]).unlink()
    with pytest.raises(ImportFailed, match=f"{parts[3]} not found"):
        import_gguf(tmp_path / parts[0], tmp_path / "out3", model_id="s3-mlx")


def _reference_of_parts(arch: Arch, folder: Path, parts: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in parts:
        out |= gguf_reference_weights(arch, folder / name)
    return out


# --- tokenizers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3", "smollm", "qwen2", "mistral", "gemma2"])
def test_tokenizer_round_trip(tmp_path: Path, spm: dict, name: str) -> None:
    from tokenizers import Tokenizer

    arch = ARCHS[name]
    vocab = _vocab(arch, spm)
    src = write_arch_gguf(tmp_path / "t.gguf", arch, vocab, hf_weights(arch, len(vocab["tokens"])))
    info = import_gguf(src, tmp_path / "out", model_id="t-mlx")
    tok = Tokenizer.from_file(str(info.path / "tokenizer.json"))
    for line in [*MULTILINGUAL.split("\n"), " leading space", ""]:
        ids = tok.encode(line).ids
        assert tok.decode(ids, skip_special_tokens=True) == line, (name, line)
    if arch.tokenizer == "spm":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=vocab["model"])
        for line in MULTILINGUAL.split("\n"):
            assert tok.encode(line).ids == [vocab["bos"], *sp.encode(line)], line
    specials = tok.encode("<|im_start|>user").ids
    assert vocab["tokens"].index("<|im_start|>") in specials


# --- refusals -----------------------------------------------------------------------------------


def test_unsupported_type_names_the_supported_ones(tmp_path: Path) -> None:
    arch = ARCHS["qwen2"]
    vocab = gpt2_vocab()
    weights = hf_weights(arch, len(vocab["tokens"]))
    raw = {"blk.0.ffn_down.weight": (np.zeros((HIDDEN, 2 * 110), np.uint8), QT.Q3_K)}
    src = write_arch_gguf(tmp_path / "q3.gguf", arch, vocab, weights, raw=raw)
    with pytest.raises(ImportFailed, match=r"Q3_K \(1 tensors\).*Supported: .*Q4_K.*Q6_K"):
        import_gguf(src, tmp_path / "out", model_id="q3-mlx")
    assert not (tmp_path / "out").exists()


def test_unknown_pre_tokenizer_is_refused(tmp_path: Path) -> None:
    arch = ARCHS["qwen2"]
    arch = Arch(**{**arch.__dict__, "tokenizer": "gpt2:not-a-real-pre"})
    vocab = gpt2_vocab()
    src = write_arch_gguf(tmp_path / "p.gguf", arch, vocab, hf_weights(arch, 263))
    with pytest.raises(ImportFailed, match=r"pre-tokenizer 'not-a-real-pre'.*qwen2"):
        import_gguf(src, tmp_path / "out", model_id="p-mlx")
