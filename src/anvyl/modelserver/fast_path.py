"""Which of a model's layer modules run on Anvyl's CPU kernels, for the log and the model list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAST_PATH_ATTRIBUTE = "anvyl_fast_path"


@dataclass(frozen=True)
class FastPath:
    """Layer modules on the kernel and layer modules left on MLX's ops, by class, with counts."""

    replaced: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """`kernel`, `mlx`, or `partial (MLX ops: module.Class: count, ...)`."""
        if not self.replaced:
            return "mlx"
        if not self.kept:
            return "kernel"
        return f"partial (MLX ops: {describe_counts(self.kept)})"


def describe_counts(counts: dict[str, int]) -> str:
    """`KernelAttention: 30, ...` (or `none`)."""
    return ", ".join(f"{k}: {n}" for k, n in counts.items()) or "none"


def fast_path_of(model: Any) -> str:
    """How the model's layers run (`FastPath.describe`): `mlx` unless the kernel took them."""
    path = getattr(model, FAST_PATH_ATTRIBUTE, None)
    return path.describe() if isinstance(path, FastPath) else "mlx"


def record_fast_path(model: Any, path: FastPath) -> None:
    """Keep `path` on the model (a plain attribute, outside its parameter tree)."""
    object.__setattr__(model, FAST_PATH_ATTRIBUTE, path)
