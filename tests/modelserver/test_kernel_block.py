"""`KernelBlock`: a decode step built in one Python call computes exactly what the modules do.

Random-weight models of each architecture it takes (`tests/random_models.py`) are loaded twice by
Anvyl's loader, with `ANVYL_KERNEL_BLOCK=0` (mlx-lm's blocks over the kernel modules) and with
the default, and run on the same tokens: a prompt chunk above `KERNEL_MAX_ROWS` (lowered to 256
here; the block hands it to the modules), a small chunk and decode steps (the block's own path),
alone and as a left-padded batch. The logits must be equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from random_models import write_random_model

from anvyl.modelserver.kernel import load_kernels

pytestmark = pytest.mark.skipif(
    load_kernels() is None, reason="anvyl_kernels is not installed (scripts/setup.sh builds it)"
)

BLOCK_ARCHS = ("llama", "llama3", "qwen2", "qwen3")
# Rows above which layers dequantize and use BLAS, and the block hands a chunk to the modules
# (the default, 4096, would make the long chunk's attention needlessly big).
MAX_ROWS = 256


@pytest.fixture(autouse=True)
def _small_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from anvyl.modelserver import kernel, kernel_block

    monkeypatch.setattr(kernel, "KERNEL_MAX_ROWS", MAX_ROWS)
    monkeypatch.setattr(kernel_block, "KERNEL_MAX_ROWS", MAX_ROWS)


def load(model_dir: Path, block: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The model as the loader serves it, with or without `KernelBlock`s."""
    from anvyl.modelserver.loader import load_model_dir

    monkeypatch.setenv("ANVYL_KERNEL_BLOCK", "1" if block else "0")
    return load_model_dir(model_dir).model


def logits_of(model: Any, batch: int) -> list[mx.array]:
    """Logits of a long chunk, a short one and eight decode steps (left-padded when batched)."""
    from mlx_lm.models.cache import BatchKVCache

    caches = [BatchKVCache([3 * b for b in range(batch)]) for _ in model.layers]
    chunks = [MAX_ROWS + 20, 16] + [1] * 8
    out = []
    for i, n in enumerate(chunks):
        tokens = mx.random.randint(3, 500, (batch, n), key=mx.random.key(7 + i))
        logits = model(tokens, cache=caches)
        mx.eval(logits)
        out.append(logits)
    return out


@pytest.mark.parametrize("arch", BLOCK_ARCHS)
def test_block_step_equals_the_modules_bit_for_bit(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anvyl.modelserver.fast_path import fast_path_of
    from anvyl.modelserver.kernel_block import KernelBlock

    model_dir = write_random_model(tmp_path / arch, arch)
    plain, fast = load(model_dir, False, monkeypatch), load(model_dir, True, monkeypatch)
    assert not any(isinstance(layer, KernelBlock) for layer in plain.layers)
    assert all(isinstance(layer, KernelBlock) and layer._plan for layer in fast.layers)
    assert fast_path_of(fast) == "kernel"
    for batch in (1, 3):
        pairs = zip(logits_of(plain, batch), logits_of(fast, batch), strict=True)
        for i, (want, got) in enumerate(pairs):
            assert mx.array_equal(got, want).item(), f"batch {batch}, chunk {i}"


def test_blocks_the_kernel_does_not_take_whole_stay_mlx_lm_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anvyl.modelserver.kernel_block import KernelBlock

    # Gemma's sandwich blocks and Phi-3's fused projections are not `KernelBlock`s.
    for arch in ("gemma3", "phi3"):
        model = load(write_random_model(tmp_path / arch, arch), True, monkeypatch)
        assert not any(isinstance(layer, KernelBlock) for layer in model.layers)
