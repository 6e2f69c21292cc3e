"""Loading an MLX model directory, in the weight dtype that is fastest on this backend.

MLX's own CPU path gains nothing from batching with quantized weights, while float32 weights go
through BLAS (OpenBLAS when preloaded) and batch well: measured on a 2-core CPU, 4-bit decodes
7 tokens/s on one stream and 8 over eight; float32 with OpenBLAS 16.5 and 74. Anvyl's own
quantized kernel (`kernel.py`) beats both: the weights stay packed and batch as well as BLAS.
So `auto` keeps a quantized model quantized on the CPU when the kernel is available (and on a
GPU), and dequantizes to float32 on the CPU otherwise. `--dtype quantized` on the CPU uses the
kernel too; `ANVYL_KERNEL=0` gives MLX's own quantized matmul.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from anvyl.modelserver import import_cache
from anvyl.modelserver.startup import TIMELINE
from anvyl.modelserver.threads import configure_threads

log = logging.getLogger("anvyl.modelserver")

DEFAULT_CONTEXT_LENGTH = 4096
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class ModelInfo:
    """What the API reports about the model, read from its `config.json`."""

    arch: str
    quantization: str
    context_length: int


class Tokenizer(Protocol):
    """The part of mlx-lm's `TokenizerWrapper` the server uses (fakes implement it too)."""

    eos_token_ids: Any

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        """Token ids of `text`."""
        ...

    def apply_chat_template(self, messages: Any, **kwargs: Any) -> Any:
        """The chat template applied to `messages`."""
        ...


@dataclass
class LoadedModel:
    """A model ready to generate: the network, its tokenizer and what to report about it."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    dtype: str
    vocab_size: int


ModelLoader = Callable[[], LoadedModel]


def read_model_info(model_dir: Path) -> ModelInfo:
    """Architecture, quantization and context length from `config.json` (no weights read)."""
    config = json.loads((model_dir / "config.json").read_text())
    return ModelInfo(
        arch=str(config.get("model_type", "unknown")),
        quantization=describe_quantization(config),
        context_length=context_length_of(config),
    )


def context_length_of(config: dict[str, Any]) -> int:
    """The model's own context length from its config."""
    for key in _CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    text = config.get("text_config")
    if isinstance(text, dict):
        return context_length_of(text)
    return DEFAULT_CONTEXT_LENGTH


def describe_quantization(config: dict[str, Any]) -> str:
    """`4bit`, `4bit/8bit` (mixed), or the stored float dtype."""
    quant = config.get("quantization") or config.get("quantization_config")
    if isinstance(quant, dict) and "bits" in quant:
        bits = {quant["bits"]} | {
            v["bits"] for v in quant.values() if isinstance(v, dict) and "bits" in v
        }
        return "/".join(f"{b}bit" for b in sorted(bits))
    dtype = config.get("torch_dtype") or config.get("dtype")
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(str(dtype), "unknown")


def resolve_dtype(requested: str, *, on_gpu: bool, kernel: bool = False) -> str:
    """The dtype to serve in: `requested`, or for `auto` the fastest on this backend.

    `kernel`: the model is quantized and Anvyl's CPU kernel can serve it.
    """
    if requested != "auto":
        return requested
    return "quantized" if on_gpu or kernel else "float32"


def is_quantized(info: ModelInfo) -> bool:
    """Whether the model's weights are stored quantized."""
    return info.quantization.endswith("bit")


def load_model_dir(model_dir: Path, dtype: str = "auto", ctx: int | None = None) -> LoadedModel:
    """Load `model_dir` with mlx-lm and convert its weights to the dtype `dtype` resolves to."""
    import_cache.install()
    import mlx.core as mx
    from mlx_lm.utils import load

    from anvyl.modelserver.kernel import load_kernels, use_kernel
    from anvyl.modelserver.kernel_block import use_kernel_blocks
    from anvyl.modelserver.kernel_layers import use_kernel_layers
    from anvyl.modelserver.layout import transpose_weights

    TIMELINE.mark("libraries")
    keep_heap_small()
    info = read_model_info(model_dir)
    model, tokenizer = load(str(model_dir), lazy=True)
    on_gpu = mx.default_device() == mx.gpu
    kernels = None if on_gpu or not is_quantized(info) else load_kernels()
    served = resolve_dtype(dtype, on_gpu=on_gpu, kernel=kernels is not None)
    if served != "quantized":
        dequantize(model)
        model.set_dtype(getattr(mx, served))
    if not on_gpu:
        configure_threads(kernels)
        if served == "quantized" and kernels is not None:
            log.info("quantized matmuls: Anvyl's kernel (%s)", kernels.simd())
            use_kernel(model, kernels)
            use_kernel_layers(model, kernels)
            use_kernel_blocks(model, kernels)
        if served == "float32" and os.environ.get("ANVYL_TRANSPOSE_WEIGHTS", "1") != "0":
            transpose_weights(model)
    mx.eval(model.parameters())
    mx.clear_cache()  # the buffers of the weights as stored, freed above, back to the system
    if ctx is not None:
        info = ModelInfo(info.arch, info.quantization, min(ctx, info.context_length))
    vocab = _vocab_size(model, tokenizer)
    TIMELINE.mark("load")
    log.info(
        "loaded %s (%s, serving %s, context %d)",
        model_dir,
        info.quantization,
        served,
        info.context_length,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, dtype=served, vocab_size=vocab)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def keep_heap_small() -> bool:
    """Have glibc give big freed buffers back to the system; return whether it was set.

    glibc raises its mmap threshold each time a big block is freed, so activations and prompt
    buffers end up on the heap, which keeps the pages after they are freed. Fixed at 128 KiB
    (what `MALLOC_MMAP_THRESHOLD_` does; MLX's own buffer cache still reuses blocks): measured
    with the bundled model after a 495-token prompt and 16 streams of 128 tokens, RSS 346 MiB
    instead of 557, decode time unchanged within noise. `ANVYL_MALLOC_TUNING=0` leaves glibc be.
    """
    if os.environ.get("ANVYL_MALLOC_TUNING") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _glibc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_memory() -> None:
    """Give MLX's cached buffers and glibc's free heap pages back to the system (when idle).

    After a burst, freed KV caches and activations stay mapped (MLX's buffer cache, holes in the
    heap): measured after 16 streams of the bundled model, RSS stayed ~60 MB above what the next
    request needed. Called when the engine runs out of work; costs a few milliseconds.
    """
    import mlx.core as mx

    mx.clear_cache()
    if os.environ.get("ANVYL_MALLOC_TUNING") == "0":
        return
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


@functools.cache
def _glibc_function(name: str) -> Any:
    """glibc's function `name` through ctypes (loaded once), or None when libc is not glibc."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def dequantize(model: Any) -> None:
    """Replace quantized layers by float ones, computing in float32 so the result is exact."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    replaced = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding):
            continue
        weight = mx.dequantize(
            module.weight,
            module.scales.astype(mx.float32),
            None if module.biases is None else module.biases.astype(mx.float32),
            group_size=module.group_size,
            bits=module.bits,
            mode=module.mode,
        )
        rows, cols = weight.shape
        if isinstance(module, nn.QuantizedEmbedding):
            layer: Any = nn.Embedding(rows, cols)
        else:
            layer = nn.Linear(cols, rows, bias="bias" in module)
            if "bias" in module:
                layer.bias = module.bias
        layer.weight = weight
        replaced.append((name, layer))
    if replaced:
        model.update_modules(tree_unflatten(replaced))


def _vocab_size(model: Any, tokenizer: Any) -> int:
    """The number of logits the model produces (token ids must stay below it)."""
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if size else len(tokenizer)
