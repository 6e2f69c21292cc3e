"""The kernel's layer ops: norm, rotary embedding, attention and SwiGLU, each one graph node.

They must compute what MLX's own ops compute, up to float32 rounding, for every layout the model
hands them (strided views of a KV cache, per-row offsets, boolean, additive and causal masks).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest

from anvyl.modelserver.kernel import load_kernels
from anvyl.modelserver.kernel_layers import layers_work

kernels = load_kernels()
pytestmark = pytest.mark.skipif(
    kernels is None, reason="anvyl_kernels is not installed (scripts/setup.sh builds it)"
)


def assert_close(got: mx.array, want: mx.array, tol: float = 1e-5) -> None:
    """Same shape, float32, equal up to rounding relative to the largest value."""
    assert got.shape == want.shape and got.dtype == mx.float32
    scale = mx.abs(want).max().item() + 1e-6
    assert mx.abs(got - want).max().item() <= tol * scale


def heads(x: mx.array, n: int) -> mx.array:
    """(B, L, n * D) as (B, n, L, D), the way mlx-lm's attention reshapes a projection."""
    B, L, _ = x.shape
    return x.reshape(B, L, n, -1).transpose(0, 2, 1, 3)


def test_layer_ops_pass_their_self_check() -> None:
    assert layers_work(kernels)


@pytest.mark.parametrize("shape", [(1, 1, 576), (3, 7, 576), (2, 5, 100)])
def test_rms_norm_matches_mlx(shape: tuple[int, ...]) -> None:
    x = mx.random.normal(shape, key=mx.random.key(0)) * 3
    w = mx.random.normal((shape[-1],), key=mx.random.key(1))
    assert_close(kernels.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5))
    strided = mx.random.normal((shape[-1], *shape[:-1]), key=mx.random.key(2)).moveaxis(0, -1)
    assert_close(kernels.rms_norm(strided, w, 1e-5), mx.fast.rms_norm(strided, w, 1e-5))


def test_swiglu_matches_mlx() -> None:
    g = mx.random.normal((4, 3, 1536), key=mx.random.key(3)) * 4
    u = mx.random.normal((4, 3, 1536), key=mx.random.key(4))
    assert_close(kernels.swiglu(g, u), nn.silu(g) * u)
    assert_close(kernels.swiglu(g.T, u.T), nn.silu(g.T) * u.T)


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("offset", [0, 37, [5, -3, 200]])
def test_rope_heads_matches_mlx(traditional: bool, offset: int | list[int]) -> None:
    x = mx.random.normal((3, 6, 9 * 64), key=mx.random.key(5))
    off = mx.array(offset, dtype=mx.int32)
    for dims in (64, 32):
        want = mx.fast.rope(
            heads(x, 9), dims, traditional=traditional, base=100000.0, scale=0.5, offset=off
        )
        got = kernels.rope_heads(x, 9, dims, traditional, 100000.0, 0.5, off)
        assert_close(got, want)


def attention_reference(q, k, v, scale, mask):
    out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    B, H, L, D = out.shape
    return out.transpose(0, 2, 1, 3).reshape(B, L, H * D)


@pytest.mark.parametrize("L", [1, 4])
def test_attention_matches_mlx_over_a_kv_cache_slice(L: int) -> None:
    """Keys and values as mlx-lm's BatchKVCache hands them: a slice of a bigger buffer."""
    B, Hq, Hkv, D, S = 3, 9, 3, 64, 41
    q = mx.random.normal((B, Hq, L, D), key=mx.random.key(6))
    kbuf = mx.random.normal((B, Hkv, 256, D), key=mx.random.key(7))
    vbuf = mx.random.normal((B, Hkv, 256, D), key=mx.random.key(8))
    k, v = kbuf[..., :S, :], vbuf[..., :S, :]
    left_padding = mx.array([0, 4, 17])
    rinds = mx.arange(S)
    mask = (rinds[None] <= mx.arange(S - L, S)[:, None]) & (
        left_padding[:, None, None, None] <= rinds
    )
    assert_close(kernels.attention(q, k, v, 0.125, mask), attention_reference(q, k, v, 0.125, mask))
    assert_close(
        kernels.attention(q, k, v, 0.125, None, True), attention_reference(q, k, v, 0.125, "causal")
    )
    additive = mx.random.normal((L, S), key=mx.random.key(9))
    assert_close(
        kernels.attention(q, k, v, 0.125, additive), attention_reference(q, k, v, 0.125, additive)
    )
    transposed_q = mx.random.normal((B, L, Hq, D), key=mx.random.key(10)).transpose(0, 2, 1, 3)
    assert_close(
        kernels.attention(transposed_q, k, v, 0.125),
        attention_reference(transposed_q, k, v, 0.125, None),
    )


def test_attention_of_a_fully_hidden_row_is_zero_not_nan() -> None:
    q = mx.random.normal((1, 2, 1, 64), key=mx.random.key(11))
    k = mx.random.normal((1, 1, 5, 64), key=mx.random.key(12))
    out = kernels.attention(q, k, k, 0.125, mx.zeros((1, 1, 1, 5), dtype=mx.bool_))
    assert mx.array_equal(out, mx.zeros((1, 1, 128))).item()


def test_layer_ops_reject_bad_shapes() -> None:
    x = mx.zeros((2, 3, 576))
    with pytest.raises(ValueError, match="match x's last axis"):
        kernels.rms_norm(x, mx.zeros((5,)), 1e-5)
    with pytest.raises(ValueError, match="same shape"):
        kernels.swiglu(x, mx.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="n_heads"):
        kernels.rope_heads(x, 7, 64, False, 1e4, 1.0, mx.array(0))
    with pytest.raises(ValueError, match="one per row"):
        kernels.rope_heads(x, 9, 64, False, 1e4, 1.0, mx.array([1, 2, 3]))
    q = mx.zeros((2, 9, 1, 64))
    with pytest.raises(ValueError, match="multiple of Hkv"):
        kernels.attention(q, mx.zeros((2, 2, 5, 64)), mx.zeros((2, 2, 5, 64)), 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        kernels.attention(q, mx.zeros((2, 3, 5, 64)), mx.zeros((2, 3, 5, 64)), 0.1, mx.zeros((4,)))


def test_attention_reads_a_float16_kv_cache() -> None:
    """Half-size keys and values are read as stored: the result is float32 attention over them."""
    q = mx.random.normal((2, 9, 1, 64), key=mx.random.key(13))
    kbuf = mx.random.normal((2, 3, 64, 64), key=mx.random.key(14)).astype(mx.float16)
    vbuf = mx.random.normal((2, 3, 64, 64), key=mx.random.key(15)).astype(mx.float16)
    k, v = kbuf[..., :37, :], vbuf[..., :37, :]
    got = kernels.attention(q, k, v, 0.125)
    want = attention_reference(q, k.astype(mx.float32), v.astype(mx.float32), 0.125, None)
    assert_close(got, want)


def test_rope_heads_writes_float16_and_dims_zero_only_changes_the_layout() -> None:
    x = mx.random.normal((2, 3, 3 * 64), key=mx.random.key(16))
    off = mx.array([4, 9], dtype=mx.int32)
    half = kernels.rope_heads(x, 3, 64, False, 1e4, 1.0, off, float16_out=True)
    assert half.dtype == mx.float16
    full = kernels.rope_heads(x, 3, 64, False, 1e4, 1.0, off)
    assert mx.array_equal(half, full.astype(mx.float16)).item()
    moved = kernels.rope_heads(x, 3, 0, False, 1.0, 1.0, off)
    assert mx.array_equal(moved, heads(x, 3)).item()


def llama_attention():
    """A small mlx-lm Llama attention (float32 weights, GQA, rope base 1e5)."""
    from mlx_lm.models import llama

    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=128,
        num_hidden_layers=1,
        intermediate_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=16,
        rope_theta=100000.0,
    )
    mx.random.seed(20)
    attn = llama.Attention(args)
    mx.eval(attn.parameters())
    return attn


@pytest.mark.parametrize("kv_dtype", ["float16", "float32"])
def test_kernel_attention_module_matches_mlx_lm_over_a_prompt_and_decode_steps(
    kv_dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefill then three decode steps through both modules, each with its own KV cache."""
    from mlx_lm.models.cache import KVCache

    from anvyl.modelserver.kernel_layers import KernelAttention

    monkeypatch.setenv("ANVYL_KV_DTYPE", kv_dtype)
    attn = llama_attention()
    fast = KernelAttention(attn, kernels)
    ours, theirs = KVCache(), KVCache()
    x = mx.random.normal((1, 7, 128), key=mx.random.key(21))
    steps = [(x, "causal")] + [
        (mx.random.normal((1, 1, 128), key=mx.random.key(22 + i)), None) for i in range(3)
    ]
    tol = 2e-3 if kv_dtype == "float16" else 1e-5
    for inputs, mask in steps:
        assert_close(fast(inputs, mask, ours), attn(inputs, mask, theirs), tol=tol)
    assert ours.keys.dtype == getattr(mx, kv_dtype)


def test_kernel_attention_module_falls_back_for_a_quantized_kv_cache() -> None:
    from mlx_lm.models.cache import QuantizedKVCache

    from anvyl.modelserver.kernel_layers import KernelAttention

    attn = llama_attention()
    fast = KernelAttention(attn, kernels)
    x = mx.random.normal((1, 5, 128), key=mx.random.key(30))
    got = fast(x, "causal", QuantizedKVCache(group_size=32, bits=8))
    want = attn(x, "causal", QuantizedKVCache(group_size=32, bits=8))
    assert_close(got, want, tol=2e-2)


@pytest.mark.parametrize("traditional", [False, True])
def test_rope_heads_adds_bias_norms_scales_and_takes_freqs_as_mlx_lm_modules_do(
    traditional: bool,
) -> None:
    """Qwen2's bias, Qwen3's/Gemma 3's per-head norm, Phi-3's mscale and Llama 3's freqs."""
    x = mx.random.normal((3, 5, 4 * 64), key=mx.random.key(40)) * 3
    bias = mx.random.normal((4 * 64,), key=mx.random.key(41))
    norm = 1.0 + 0.2 * mx.random.normal((64,), key=mx.random.key(42))
    freqs = 500000.0 ** (mx.arange(0, 48, 2) / 48) * mx.linspace(1.0, 8.0, 24)
    off = mx.array([0, 600, -4], dtype=mx.int32)
    h = mx.fast.rms_norm(heads(x + bias, 4), norm, 1e-6)
    want = mx.fast.rope(
        h.at[..., :48].multiply(1.19),
        48,
        traditional=traditional,
        base=None,
        scale=1.0,
        offset=off,
        freqs=freqs,
    )
    got = kernels.rope_heads(
        x, 4, 48, traditional, 0.0, 1.0, off, bias=bias, freqs=freqs, norm=norm, mscale=1.19
    )
    assert_close(got, want)
    with pytest.raises(ValueError, match="freqs"):
        kernels.rope_heads(x, 4, 48, False, 0.0, 1.0, off, freqs=freqs[:5])
    with pytest.raises(ValueError, match="norm"):
        kernels.rope_heads(x, 4, 48, False, 1e4, 1.0, off, norm=norm[:5])
    with pytest.raises(ValueError, match="bias"):
        kernels.rope_heads(x, 4, 48, False, 1e4, 1.0, off, bias=bias[:5])


def test_geglu_matches_mlx() -> None:
    g = mx.random.normal((4, 3, 1536), key=mx.random.key(43)) * 4
    u = mx.random.normal((4, 3, 1536), key=mx.random.key(44))
    assert_close(kernels.geglu(g, u), nn.gelu_approx(g) * u)
    halves = mx.random.normal((2, 3, 2 * 1536), key=mx.random.key(45))  # Phi-3's fused gate_up
    gate, up = mx.split(halves, 2, axis=-1)
    assert_close(kernels.swiglu(gate, up), nn.silu(gate) * up)


def test_attention_soft_caps_scores_before_the_mask_as_gemma2() -> None:
    B, Hq, Hkv, L, S, D = 2, 4, 2, 3, 9, 64
    q = mx.random.normal((B, Hq, L, D), key=mx.random.key(46)) * 4
    k = mx.random.normal((B, Hkv, S, D), key=mx.random.key(47))
    v = mx.random.normal((B, Hkv, S, D), key=mx.random.key(48))
    mask = mx.random.uniform(shape=(B, 1, L, S), key=mx.random.key(49)) > 0.3
    scores = (q * 0.1).reshape(B, Hkv, 2, L, D) @ mx.expand_dims(k, 2).swapaxes(-1, -2)
    scores = mx.tanh(scores / 5.0) * 5.0
    scores = mx.where(mask[:, :, None], scores, mx.finfo(mx.float32).min)
    out = mx.softmax(scores, axis=-1, precise=True) @ mx.expand_dims(v, 2)
    want = out.reshape(B, Hq, L, D).transpose(0, 2, 1, 3).reshape(B, L, Hq * D)
    assert_close(kernels.attention(q, k, v, 0.1, mask, softcap=5.0), want)


def test_rms_norm_adds_a_residual_in_the_same_node() -> None:
    """Gemma's `h + post_norm(r)`: one node, the same numbers as MLX's norm then add."""
    r = mx.random.normal((2, 3, 576), key=mx.random.key(50)) * 3
    h = mx.random.normal((2, 3, 576), key=mx.random.key(51))
    w = 1.0 + mx.random.normal((576,), key=mx.random.key(52))
    assert_close(kernels.rms_norm(r, w, 1e-6, h), h + mx.fast.rms_norm(r, w, 1e-6))
    with pytest.raises(ValueError, match="residual"):
        kernels.rms_norm(r, w, 1e-6, h[:, :1])
