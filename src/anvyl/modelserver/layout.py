"""Float weights stored transposed, so that BLAS multiplies without transposing them.

`nn.Linear` computes `x @ W.T` with `W` stored (out, in). MLX's CPU backend hands that to
`cblas_sgemm` with a transposed B operand, and OpenBLAS (0.3.21, Debian 12) is slow at it for the
few rows of a decode step: measured on a 2-core Xeon, a 1536x576 float32 projection of one row
took 0.32 ms that way and 0.13 ms with the weight stored (in, out), and the 49152x576 output
head 27 ms against 20 ms; one decode step of the bundled model went from 115 to 82 ms. The
results are the same numbers (same greedy ids: `tests/modelserver/test_engine_greedy.py`).

So on the CPU, float32 `Linear` and `Embedding` layers are replaced by these, which keep only the
transposed matrix (no extra memory: a tied embedding gathers its rows as columns of the same
array). `weight` stays available as a transposed view for code that reads it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten


class TransposedLinear(nn.Module):
    """`y = x @ weight_t (+ bias)` with `weight_t` stored (in, out)."""

    def __init__(self, weight: mx.array, bias: mx.array | None = None) -> None:
        super().__init__()
        self.weight_t = mx.contiguous(weight.T)
        if bias is not None:
            self.bias = bias

    @property
    def weight(self) -> mx.array:
        """The weight as `nn.Linear` stores it (a view)."""
        return self.weight_t.T

    def __call__(self, x: mx.array) -> mx.array:
        """The projection of `x`."""
        if "bias" in self:
            return mx.addmm(self["bias"], x, self.weight_t)
        return x @ self.weight_t


class TransposedEmbedding(nn.Module):
    """An embedding stored (dims, vocab): lookups gather columns, `as_linear` is one matmul."""

    def __init__(self, weight: mx.array) -> None:
        super().__init__()
        self.weight_t = mx.contiguous(weight.T)

    @property
    def weight(self) -> mx.array:
        """The table as `nn.Embedding` stores it (a view)."""
        return self.weight_t.T

    def __call__(self, ids: mx.array) -> mx.array:
        """The embeddings of `ids`, shape `(*ids.shape, dims)`."""
        return mx.moveaxis(mx.take(self.weight_t, ids, axis=1), 0, -1)

    def as_linear(self, x: mx.array) -> mx.array:
        """Logits of `x` against the table (a tied output head)."""
        return x @ self.weight_t


def transpose_weights(model: Any) -> int:
    """Swap the model's float `Linear`/`Embedding` layers for transposed ones; return how many."""
    replaced: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            bias = module.get("bias", None)
            replaced.append((name, TransposedLinear(module.weight, bias)))
        elif type(module) is nn.Embedding:
            replaced.append((name, TransposedEmbedding(module.weight)))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
    return len(replaced)
