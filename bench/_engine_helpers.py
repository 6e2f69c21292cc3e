"""Profile of one decode step of the model as the engine loads it (`bench/engine.py --profile`).

Times, per batch size: the whole step (`model(...)` plus `mx.eval`), the Python time to build its
graph, and each part of the network evaluated on its own (projections, attention with its KV
cache, norms, the MLP, the output head), so that the share of every op and of dispatch overhead
shows. Run it with OpenBLAS preloaded, as the server runs (`bench/engine.py` does).
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run `fn`, evaluate what it returns, and time both."""
    import mlx.core as mx

    start = time.perf_counter()
    out = fn()
    mx.eval(out)
    return out, time.perf_counter() - start


def profile_step(model_dir: Path, dtype: str, batches: list[int], context: int = 64) -> None:
    """Print the step time and the per-part breakdown for each batch size."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from anvyl.modelserver.loader import load_model_dir

    loaded = load_model_dir(model_dir, dtype)
    model = loaded.model
    inner = model.model
    print(f"profile: {model_dir.name}, served as {loaded.dtype}, context {context}")
    for batch in batches:
        cache = make_prompt_cache(model)
        mx.eval(model(mx.array([[1] * context] * batch), cache=cache))
        tokens = mx.array([[5]] * batch)
        steps, builds, cpu = [], [], []
        for _ in range(12):
            start, start_cpu = time.perf_counter(), time.process_time()
            logits = model(tokens, cache=cache)
            builds.append(time.perf_counter() - start)
            mx.eval(logits)
            steps.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        parts: collections.Counter[str] = collections.Counter()
        runs = 6
        for _ in range(runs):
            h, t = _timed(lambda tokens=tokens: inner.embed_tokens(tokens))
            parts["embed"] += t
            for layer, c in zip(inner.layers, cache, strict=True):
                h = _profile_layer(layer, c, h, parts)
            h, t = _timed(lambda h=h: inner.norm(h))
            parts["norms"] += t
            head = inner.embed_tokens.as_linear if model.args.tie_word_embeddings else model.lm_head
            _, t = _timed(lambda h=h, head=head: head(h))
            parts["output head"] += t
        step = statistics.median(steps)
        total = sum(parts.values()) / runs
        print(
            f"\nbatch {batch}: step {step * 1e3:.1f} ms ({batch / step:.1f} tok/s), CPU time"
            f" {statistics.median(cpu) * 1e3:.1f} ms (all threads; steadier than wall time on a"
            f" loaded machine), Python graph build {statistics.median(builds) * 1e3:.1f} ms;"
            " parts evaluated one by one"
            f" {total * 1e3:.1f} ms (the excess over the step is per-eval overhead)"
        )
        for name, seconds in parts.most_common():
            ms = seconds / runs * 1e3
            print(f"   {name:<28}{ms:8.2f} ms {100 * seconds / runs / total:6.1f}%")


def _profile_layer(layer: Any, cache: Any, h: Any, parts: collections.Counter[str]) -> Any:
    """Evaluate one transformer block part by part, adding each time to `parts`."""
    import mlx.core as mx

    attn = layer.self_attn
    x, t = _timed(lambda: layer.input_layernorm(h))
    parts["norms"] += t
    if not hasattr(attn, "rope"):  # the kernel's modules: projections and ops in one module each
        h, t = _timed(lambda: h + attn(x, None, cache))
        parts["attention module (q/k/v/o, rope, KV cache)"] += t
        x, t = _timed(lambda: layer.post_attention_layernorm(h))
        parts["norms"] += t
        h, t = _timed(lambda: h + layer.mlp(x))
        parts["MLP module (gate/up/down, swiglu)"] += t
        return h
    (q, k, v), t = _timed(lambda: (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)))
    parts["q/k/v projections"] += t
    b, n, _ = x.shape

    def attention() -> Any:
        qq = q.reshape(b, n, attn.n_heads, -1).transpose(0, 2, 1, 3)
        kk = k.reshape(b, n, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        vv = v.reshape(b, n, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        qq = attn.rope(qq, offset=cache.offset)
        kk = attn.rope(kk, offset=cache.offset)
        kk, vv = cache.update_and_fetch(kk, vv)
        out = mx.fast.scaled_dot_product_attention(qq, kk, vv, scale=attn.scale)
        return out.transpose(0, 2, 1, 3).reshape(b, n, -1)

    o, t = _timed(attention)
    parts["rope + KV cache + sdpa"] += t
    h, t = _timed(lambda: h + attn.o_proj(o))
    parts["o projection + residual"] += t
    x, t = _timed(lambda: layer.post_attention_layernorm(h))
    parts["norms"] += t
    (g, u), t = _timed(lambda: (layer.mlp.gate_proj(x), layer.mlp.up_proj(x)))
    parts["gate/up projections"] += t
    s, t = _timed(lambda: mx.sigmoid(g) * g * u)
    parts["swiglu"] += t
    h, t = _timed(lambda: h + layer.mlp.down_proj(s))
    parts["down projection + residual"] += t
    return h
