"""What Anvyl knows about an MLX model directory, read from config.json and safetensors headers.

Nothing here loads a tensor: parameter counts come from the shapes in each safetensors header
(8-byte length, then JSON), with quantized weights unpacked by their bit width.

Memory needed to serve (`ModelInfo.memory_bytes`, see `estimate_memory`):

    weights_bytes * 1.10                       weights plus 10% for activations and scratch
  + 2 * layers * kv_heads * head_dim * 2 B     fp16 K and V cache per token ...
        * min(context_length, 4096)            ... for the default serving context
  + 300 MiB                                    Python, MLX and the server process
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anvyl.errors import InvalidArgument

SOURCES = ("anvyl", "lmstudio", "huggingface")
DEFAULT_SERVE_CONTEXT = 4096
RUNTIME_OVERHEAD_BYTES = 300 * 1024 * 1024
ACTIVATION_FACTOR = 1.10
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit

_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_DTYPE_NAMES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


@dataclass(frozen=True)
class ModelInfo:
    """One MLX model directory Anvyl can serve."""

    id: str
    path: Path
    source: str  # "anvyl" (imported), "lmstudio" or "huggingface"
    architecture: str  # config.json `model_type`
    parameters: int  # estimated from tensor shapes, quantized packing undone
    quantization: str  # "q4_1" (imported GGUF), "4bit", "4bit/8bit", "fp16", "bf16", "fp32"
    size_bytes: int  # on disk, symlinks followed
    context_length: int | None  # max_position_embeddings
    memory_bytes: int  # estimated memory to serve, see the module docstring
    weights_bytes: int = 0  # bytes of tensor data in the safetensors files
    kv_bytes_per_token: int = 0  # fp16 K+V cache per token of context
    origin: str = ""  # anvyl.json's source: "hf.co/OWNER/NAME@COMMIT" or the imported file
    tool_format: str | None = None  # how its chat template writes tool calls (modelserver.tools)

    def estimate_memory(self, context_length: int | None = None) -> int:
        """Memory needed to serve with `context_length` tokens (default: min(ctx, 4096))."""
        return estimate_memory(
            self.weights_bytes, self.kv_bytes_per_token, context_length or self._serve_ctx()
        )

    def _serve_ctx(self) -> int:
        return min(self.context_length or DEFAULT_SERVE_CONTEXT, DEFAULT_SERVE_CONTEXT)


def estimate_memory(weights_bytes: int, kv_bytes_per_token: int, context_length: int) -> int:
    """Weights + 10%, the K/V cache for `context_length` tokens, and a fixed runtime overhead."""
    return int(
        weights_bytes * ACTIVATION_FACTOR
        + kv_bytes_per_token * context_length
        + RUNTIME_OVERHEAD_BYTES
    )


def is_mlx_dir(path: Path) -> bool:
    """True for a directory holding config.json and at least one .safetensors file."""
    try:
        return (
            path.is_dir()
            and (path / "config.json").is_file()
            and any(p.suffix == ".safetensors" for p in path.iterdir())
        )
    except OSError:
        return False


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InvalidArgument(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES:
            raise InvalidArgument(f"{path} is not a safetensors file (header of {n} bytes)")
        data = f.read(n)
    try:
        header = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path} is not a safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise InvalidArgument(f"{path} is not a safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    return header


def describe_model(path: Path, *, model_id: str, source: str) -> ModelInfo:
    """Build a ModelInfo from an MLX directory; raises InvalidArgument when it is not one."""
    if not is_mlx_dir(path):
        raise InvalidArgument(
            f"{path} is not an MLX model directory (needs config.json and .safetensors files)"
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path}/config.json cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidArgument(f"{path}/config.json is not a JSON object")
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def cfg(key: str) -> Any:
        return config.get(key, text_config.get(key))

    tensors: dict[str, dict[str, Any]] = {}
    for st in sorted(path.glob("*.safetensors")):
        tensors.update(read_safetensors_header(st))
    quant = config.get("quantization") or config.get("quantization_config") or {}
    if not isinstance(quant, dict):
        quant = {}
    parameters, bits_used, weights_bytes = _count_parameters(tensors, quant)

    context = cfg("max_position_embeddings")
    context_length = int(context) if isinstance(context, int | float) else None
    info = ModelInfo(
        id=model_id,
        path=path,
        source=source,
        architecture=str(cfg("model_type") or "unknown"),
        parameters=parameters,
        quantization=_quantization_label(path, bits_used, tensors),
        size_bytes=_size_on_disk(path),
        context_length=context_length,
        memory_bytes=0,
        weights_bytes=weights_bytes,
        kv_bytes_per_token=_kv_bytes_per_token(cfg),
        origin=_provenance(path).get("source", ""),
        tool_format=read_tool_format(path),
    )
    return _with_memory(info)


def read_tool_format(path: Path) -> str | None:
    """The tool-call format of the chat template in tokenizer_config.json (None without one)."""
    from anvyl.modelserver.tools import detect_tool_format

    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: [{"name", "template"}, ...]
        template = " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return detect_tool_format(template) if template else None


def _with_memory(info: ModelInfo) -> ModelInfo:
    from dataclasses import replace

    return replace(info, memory_bytes=info.estimate_memory())


def _count_parameters(
    tensors: dict[str, dict[str, Any]], quant: dict[str, Any]
) -> tuple[int, set[int], int]:
    """(parameter count, bit widths of quantized weights, bytes of tensor data)."""
    default_bits = int(quant.get("bits", 4) or 4)
    default_group = int(quant.get("group_size", 64) or 64)
    parameters = 0
    weights_bytes = 0
    bits_used: set[int] = set()
    for name, meta in tensors.items():
        if not isinstance(meta, dict) or "shape" not in meta:
            continue
        shape = [int(d) for d in meta["shape"]]
        count = math.prod(shape)
        weights_bytes += count * _DTYPE_BYTES.get(str(meta.get("dtype")), 2)
        prefix, _, leaf = name.rpartition(".")
        scales = tensors.get(f"{prefix}.scales")
        if leaf in ("scales", "biases") and f"{prefix}.weight" in tensors and scales is not None:
            continue  # quantization metadata, not parameters
        if leaf == "weight" and isinstance(scales, dict) and shape:
            bits = _module_bits(prefix, shape, scales, quant, default_bits, default_group)
            bits_used.add(bits)
            per_word = 32 // bits if 32 % bits == 0 else 32 / bits
            count = int(math.prod(shape[:-1]) * shape[-1] * per_word)
        parameters += count
    return parameters, bits_used, weights_bytes


def _module_bits(
    module: str,
    shape: list[int],
    scales: dict[str, Any],
    quant: dict[str, Any],
    default_bits: int,
    default_group: int,
) -> int:
    entry = quant.get(module)
    if isinstance(entry, dict) and "bits" in entry:
        return int(entry["bits"])
    group = (
        int(entry.get("group_size", default_group)) if isinstance(entry, dict) else default_group
    )
    groups = int(scales.get("shape", [0])[-1] or 0)
    if groups:
        inferred = 32 * shape[-1] / (groups * group)
        if inferred in (2, 3, 4, 5, 6, 8):
            return int(inferred)
    return default_bits


def _provenance(path: Path) -> dict[str, Any]:
    """anvyl.json (written by import and pull), or {} when absent or unreadable."""
    try:
        data = json.loads((path / "anvyl.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _quantization_label(path: Path, bits_used: set[int], tensors: dict[str, Any]) -> str:
    provenance = path / "anvyl.json"
    if provenance.is_file():
        try:
            q = json.loads(provenance.read_text()).get("source_quantization")
            if isinstance(q, str) and q:
                return q.lower()
        except (OSError, ValueError, AttributeError):
            pass
    if bits_used:
        return "/".join(f"{b}bit" for b in sorted(bits_used))
    dtypes = [str(m.get("dtype")) for m in tensors.values() if isinstance(m, dict) and "dtype" in m]
    float_dtypes = [d for d in dtypes if d in _DTYPE_NAMES]
    if not float_dtypes:
        return "none"
    return _DTYPE_NAMES[max(set(float_dtypes), key=float_dtypes.count)]


def _kv_bytes_per_token(cfg: Any) -> int:
    layers = cfg("num_hidden_layers") or 0
    heads = cfg("num_attention_heads") or 0
    kv_heads = cfg("num_key_value_heads") or heads
    hidden = cfg("hidden_size") or 0
    head_dim = cfg("head_dim") or (hidden // heads if heads else 0)
    try:
        return int(2 * layers * kv_heads * head_dim * 2)
    except TypeError:
        return 0


def _size_on_disk(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total
