"""K-quant files made by llama.cpp's quantize tool (fixtures/make_kquant.py remakes them)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from arch_ggufs import ARCHS, gguf_reference_weights
from test_gguf_architectures import Q6_K_BOUND, _assert_tensors_match, _logits, _reference_dir

from anvyl.catalog.gguf_import import import_gguf

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {
    "llama3-Q4_K_M.gguf": ("llama3", "q4_k_m", {"Q4_K", "Q6_K"}),
    "llama3-Q5_K_M.gguf": ("llama3", "q5_k_m", {"Q5_K", "Q6_K"}),
    "llama3-Q6_K.gguf": ("llama3", "q6_k", {"Q6_K"}),
    "qwen2-Q4_K_M.gguf": ("qwen2", "q4_k_m", {"Q4_K", "Q6_K"}),
}


@pytest.mark.parametrize("fixture", list(CASES))
def test_llama_cpp_kquant_file(tmp_path: Path, fixture: str) -> None:
    arch_name, label, types = CASES[fixture]
    arch = ARCHS[arch_name]
    src = FIXTURES / fixture
    found = {t.tensor_type.name for t in gguf.GGUFReader(str(src)).tensors} - {"F32"}
    assert found == types  # llama.cpp really used the K-quant types (and the mix)
    info = import_gguf(src, tmp_path / "out", model_id="k-mlx")
    assert info.quantization == label
    _assert_tensors_match(arch, src, info.path, Q6_K_BOUND)
    config = json.loads((info.path / "config.json").read_text())
    bits = {q["bits"] for k, q in config["quantization"].items() if isinstance(q, dict)}
    assert bits == {8} | ({4} if "Q4_K" in types else {5} if "Q5_K" in types else set())

    expected = _logits(_reference_dir(tmp_path, arch, gguf_reference_weights(arch, src)))
    actual = _logits(info.path)
    corr = [np.corrcoef(a, e)[0, 1] for a, e in zip(actual, expected, strict=True)]
    assert min(corr) >= 0.999, corr

    from mlx_lm import generate, load

    model, tokenizer = load(str(info.path))
    generate(model, tokenizer, "hello", max_tokens=4)
