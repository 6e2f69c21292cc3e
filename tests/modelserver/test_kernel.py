"""Anvyl's quantized CPU kernel (`kernels/`, `anvyl_kernels`) and the layers that use it.

The kernel must compute what `mx.dequantize` (float32 scales) + matmul computes, up to the order
of the sums; the model served through it must answer the known question.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

from anvyl.modelserver.kernel import KERNEL_MAX_ROWS, KernelEmbedding, KernelLinear, load_kernels

kernels = load_kernels()
pytestmark = pytest.mark.skipif(
    kernels is None, reason="anvyl_kernels is not installed (scripts/setup.sh builds it)"
)


def reference(x: mx.array, wq: mx.array, scales: mx.array, biases: mx.array, gs: int, bits: int):
    """`x @ dequantize(w).T` in float32, the way the float32 serving path computes it."""
    dense = mx.dequantize(wq, scales.astype(mx.float32), biases.astype(mx.float32), gs, bits)
    return x.astype(mx.float32) @ dense.T


def quantized(out_dim: int, in_dim: int, gs: int, bits: int, dtype: mx.Dtype, seed: int = 0):
    """A random weight quantized the MLX affine way, scales and biases in `dtype`."""
    w = mx.random.normal((out_dim, in_dim), key=mx.random.key(seed)) * 0.05
    wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits)
    return wq, scales.astype(dtype), biases.astype(dtype)


def assert_close(got: mx.array, want: mx.array) -> None:
    """Equal up to float32 rounding of a sum in another order."""
    assert got.shape == want.shape and got.dtype == mx.float32
    scale = mx.abs(want).max().item() + 1e-6
    assert mx.abs(got - want).max().item() <= 2e-6 * scale * want.shape[-1] ** 0.5


@pytest.mark.parametrize("bits", [4, 5, 8])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 40])
def test_qmm_matches_dequantize_matmul(bits: int, rows: int) -> None:
    """Every row count (full and partial row blocks, column tails) at a model-like shape."""
    assert kernels is not None
    wq, scales, biases = quantized(203, 576, 32, bits, mx.float16)
    x = mx.random.normal((rows, 576), key=mx.random.key(rows))
    got = kernels.qmm(x, wq, scales, biases, 32, bits)
    assert_close(got, reference(x, wq, scales, biases, 32, bits))


@pytest.mark.parametrize("bits", [4, 5, 8])
def test_qmm_many_rows_in_chunks(bits: int) -> None:
    """Prompt-sized calls: row chunks of the buffered path (222 rows at K=576), column tails."""
    assert kernels is not None
    wq, scales, biases = quantized(35, 576, 64, bits, mx.bfloat16, seed=bits)
    for rows in (230, 501):
        x = mx.random.normal((rows, 576), key=mx.random.key(rows))
        got = kernels.qmm(x, wq, scales, biases, 64, bits)
        assert_close(got, reference(x, wq, scales, biases, 64, bits))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
@pytest.mark.parametrize("gs", [32, 64, 128])
def test_qmm_scale_dtypes_and_group_sizes(dtype: mx.Dtype, gs: int) -> None:
    """float16, bfloat16 and float32 scales; groups of 32, 64 and 128."""
    assert kernels is not None
    for bits in (4, 5, 8):
        wq, scales, biases = quantized(64, 384, gs, bits, dtype, seed=gs)
        x = mx.random.normal((6, 384), key=mx.random.key(1))
        assert_close(
            kernels.qmm(x, wq, scales, biases, gs, bits), reference(x, wq, scales, biases, gs, bits)
        )


def test_qmm_batched_strided_and_half_inputs() -> None:
    """A (batch, seq, in) input, a transposed (non-contiguous) one, and float16 in and out."""
    assert kernels is not None
    wq, scales, biases = quantized(96, 256, 32, 4, mx.float16)
    x = mx.random.normal((2, 3, 256), key=mx.random.key(2))
    assert_close(kernels.qmm(x, wq, scales, biases, 32, 4), reference(x, wq, scales, biases, 32, 4))
    xt = mx.random.normal((256, 5), key=mx.random.key(3)).T
    assert_close(
        kernels.qmm(xt, wq, scales, biases, 32, 4), reference(xt, wq, scales, biases, 32, 4)
    )
    half = kernels.qmm(x.astype(mx.float16), wq, scales, biases, 32, 4)
    assert half.dtype == mx.float16
    want = reference(x.astype(mx.float16), wq, scales, biases, 32, 4)
    assert mx.allclose(half.astype(mx.float32), want, rtol=1e-2, atol=1e-2).item()


def test_qmm_thread_counts_agree() -> None:
    """One thread and several compute the same numbers (each output column is one thread's)."""
    assert kernels is not None
    wq, scales, biases = quantized(1000, 576, 32, 8, mx.float16)
    x = mx.random.normal((8, 576), key=mx.random.key(4))
    before = kernels.num_threads()
    try:
        kernels.set_num_threads(1)
        one = kernels.qmm(x, wq, scales, biases, 32, 8)
        mx.eval(one)
        kernels.set_num_threads(3)
        three = kernels.qmm(x, wq, scales, biases, 32, 8)
        mx.eval(three)
    finally:
        kernels.set_num_threads(before)
    assert mx.array_equal(one, three).item()


def test_qmm_rejects_bad_arguments() -> None:
    """Unsupported bits, group sizes and mismatched shapes raise instead of reading past arrays."""
    assert kernels is not None
    wq, scales, biases = quantized(32, 128, 32, 4, mx.float16)
    x = mx.zeros((1, 128))
    with pytest.raises(ValueError):
        kernels.qmm(x, wq, scales, biases, 32, 3)
    with pytest.raises(ValueError):
        kernels.qmm(x, wq, scales, biases, 32, 5)  # a 4-bit weight is too narrow for 5 bits
    with pytest.raises(ValueError):
        kernels.qmm(x, wq, scales, biases, 16, 4)
    with pytest.raises(ValueError):
        kernels.qmm(mx.zeros((1, 64)), wq, scales, biases, 32, 4)


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_other_instruction_sets(isa: str) -> None:
    """The AVX2 and scalar paths (CPUs without AVX-512) compute the same numbers."""
    code = f"""
import mlx.core as mx, anvyl_kernels
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_kernel import quantized, reference, assert_close
assert anvyl_kernels.simd() == {isa!r}, anvyl_kernels.simd()
assert 5 not in anvyl_kernels.simd_bits()  # 5 bits: the scalar loop
for bits in (4, 5, 8):
    wq, s, b = quantized(75, 320, 32, bits, mx.float16)
    for rows in (1, 3, 4, 6, 9):
        x = mx.random.normal((rows, 320), key=mx.random.key(rows))
        assert_close(anvyl_kernels.qmm(x, wq, s, b, 32, bits), reference(x, wq, s, b, 32, bits))
print("ok")
"""
    if isa == "avx2" and kernels is not None and kernels.simd() == "scalar":
        pytest.skip("this CPU has no AVX2")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ANVYL_KERNEL_ISA": isa},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_kernel_layers_match_quantized_layers() -> None:
    """KernelLinear/KernelEmbedding compute the float32 path's numbers, decode and prompt sizes."""
    assert kernels is not None
    linear = nn.QuantizedLinear(320, 96, bias=True, group_size=32, bits=4)
    linear.scales = linear.scales.astype(mx.float16)
    linear.biases = linear.biases.astype(mx.float16)
    layer = KernelLinear(linear, kernels)
    dense = mx.dequantize(
        linear.weight, linear.scales.astype(mx.float32), linear.biases.astype(mx.float32), 32, 4
    )
    for rows in (1, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1):
        x = mx.random.normal((1, rows, 320), key=mx.random.key(rows))
        assert_close(layer(x), x @ dense.T + linear.bias)

    table = nn.QuantizedEmbedding(500, 64, group_size=32, bits=8)
    table.scales = table.scales.astype(mx.float16)
    table.biases = table.biases.astype(mx.float16)
    embedding = KernelEmbedding(table, kernels)
    full = mx.dequantize(
        table.weight, table.scales.astype(mx.float32), table.biases.astype(mx.float32), 32, 8
    )
    ids = mx.array([[3, 499, 0]])
    looked_up = embedding(ids)
    assert looked_up.dtype == mx.float32 and mx.array_equal(looked_up, full[ids]).item()
    h = mx.random.normal((1, 3, 64), key=mx.random.key(9))
    assert_close(embedding.as_linear(h), h @ full.T)


@pytest.mark.model
def test_model_through_the_kernel_answers_paris(bundled_model: Path) -> None:
    """The bundled model served through the kernel (the CPU default) knows the capital of France."""
    from mlx_lm.generate import generate

    from anvyl.modelserver.loader import load_model_dir

    loaded = load_model_dir(bundled_model)
    assert loaded.dtype == "quantized"
    assert isinstance(loaded.model.model.layers[0].mlp.down_proj, KernelLinear)
    assert isinstance(loaded.model.model.embed_tokens, KernelEmbedding)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = generate(loaded.model, loaded.tokenizer, prompt, max_tokens=20)
    assert "Paris" in text


def test_qmm_many_equals_qmm_each() -> None:
    """Several weights on one input in one call: each output exactly as computed alone."""
    assert kernels is not None
    parts = [quantized(n, 576, 32, 4, mx.float16, seed=n) for n in (576, 192, 200)]
    x = mx.random.normal((5, 576), key=mx.random.key(5))
    outs = kernels.qmm_many(x, *[list(t) for t in zip(*parts, strict=True)], 32, 4)
    assert len(outs) == 3
    for out, (wq, scales, biases) in zip(outs, parts, strict=True):
        assert mx.array_equal(out, kernels.qmm(x, wq, scales, biases, 32, 4)).item()


def test_shared_input_projections_match_separate_ones() -> None:
    """q/k/v through one SharedInput give the numbers of separate calls, for any input."""
    from anvyl.modelserver.kernel import share_inputs

    assert kernels is not None

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, out_dim in (("q_proj", 128), ("k_proj", 64), ("v_proj", 64)):
                layer = nn.QuantizedLinear(256, out_dim, bias=False, group_size=32, bits=4)
                setattr(self, name, KernelLinear(layer, kernels))

    attn = Attention()
    x = mx.random.normal((2, 1, 256), key=mx.random.key(6))
    alone = [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)]
    assert share_inputs(attn, kernels) == 1
    shared = [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)]
    for a, b in zip(alone, shared, strict=True):
        assert mx.array_equal(a, b).item()
    other = mx.random.normal((2, 1, 256), key=mx.random.key(7))
    assert mx.array_equal(attn.k_proj(other), kernels.qmm(other, *_qkv(attn.k_proj), 32, 4)).item()


def _qkv(layer: KernelLinear) -> tuple[mx.array, mx.array, mx.array]:
    """A kernel layer's packed weight, scales and biases."""
    return layer.weight, layer.scales, layer.biases


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
def test_dequantize_matches_mlx(bits: int, dtype: mx.Dtype) -> None:
    """The prompt path's dequantize gives MLX's float32 weight (exactly, for 16-bit scales)."""
    assert kernels is not None
    wq, scales, biases = quantized(70, 384, 64, bits, dtype, seed=bits)
    mx.eval(wq, scales, biases)
    want = mx.dequantize(wq, scales.astype(mx.float32), biases.astype(mx.float32), 64, bits)
    got = kernels.dequantize(wq, scales, biases, 64, bits)
    assert got.dtype == mx.float32 and got.shape == want.shape
    if dtype == mx.float32:
        assert mx.allclose(got, want, rtol=1e-6, atol=1e-6).item()
    else:
        assert mx.array_equal(got, want).item()


def test_five_bit_layers_go_through_the_kernel() -> None:
    """5-bit layers (GGUF Q5_0/Q5_1/Q5_K) are swapped for kernel ones where it has a SIMD path."""
    from anvyl.modelserver.kernel import kernel_bits, use_kernel

    assert kernels is not None
    model = nn.Sequential(nn.Linear(256, 64))
    nn.quantize(model, group_size=32, bits=5)
    x = mx.random.normal((2, 256), key=mx.random.key(11))
    want = model(x)
    use_kernel(model, kernels)
    swapped = isinstance(model.layers[0], KernelLinear)
    assert swapped == (5 in kernel_bits(kernels))
    assert mx.allclose(model(x), want, rtol=1e-4, atol=1e-4).item()
