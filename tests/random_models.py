"""Random-weight models of mlx-lm's architectures, written as served MLX model directories.

Each is built with mlx-lm's own model class from a config like the real checkpoints' (rope
scaling, biases, q/k norms, soft-capping, sliding windows, fused projections), its norms and
biases randomized too, cast to float16 and quantized like an imported GGUF (4-bit layers, 8-bit
embedding and head, groups of 32), and saved with `mx.save_safetensors` beside a `config.json`
and a tokenizer. Used by the fast path's correctness tests and by `bench/engine.py --archs`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

GROUP_SIZE = 32

# The architectures of the fast path, each as the config fields that make it what it is.
ARCHS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "rope_theta": 100000.0, "tie_word_embeddings": True},
    "llama3": {
        "model_type": "llama",
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
        # A short original context, so that positions of a few hundred tokens are scaled.
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        },
    },
    "mistral": {"model_type": "mistral", "rope_theta": 1000000.0, "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "rope_theta": 1000000.0, "tie_word_embeddings": True},
    "qwen2_yarn": {
        "model_type": "qwen2",
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "max_position_embeddings": 1024,
        "rope_scaling": {
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 256,
        },
    },
    "qwen3": {"model_type": "qwen3", "rope_theta": 1000000.0, "tie_word_embeddings": True},
    "gemma2": {
        "model_type": "gemma2",
        "rope_theta": 10000.0,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "query_pre_attn_scalar": 48,
    },
    "gemma3": {
        "model_type": "gemma3_text",
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "query_pre_attn_scalar": 48,
        "sliding_window": 64,
        "sliding_window_pattern": 2,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    },
    "phi3": {"model_type": "phi3", "rope_theta": 10000.0, "tie_word_embeddings": False},
    "phi3_longrope": {
        "model_type": "phi3",
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 256,
        "rope_scaling": {"type": "longrope", "short_factor": 1.0, "long_factor": 1.0},
    },
}


def model_config(
    arch: str,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 256,
    vocab: int = 512,
) -> dict[str, Any]:
    """The `config.json` of a random `arch` model of these shapes (before quantization)."""
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": ffn,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": 8192,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    config.update(json.loads(json.dumps(ARCHS[arch])))
    scaling = config.get("rope_scaling") or {}
    if scaling.get("type") == "longrope":  # per-frequency factors, as Phi-3's configs list them
        half = config["head_dim"] // 2
        scaling["short_factor"] = [1.0 + 0.01 * i for i in range(half)]
        scaling["long_factor"] = [1.0 + 0.5 * i for i in range(half)]
    return config


def write_random_model(
    path: Path,
    arch: str,
    *,
    seed: int = 0,
    tokenizer_from: Path | None = None,
    overrides: dict[str, Any] | None = None,
    **shapes: int,
) -> Path:
    """Write a random-weight `arch` model directory at `path` (see `model_config` for shapes).

    `tokenizer_from`: a model directory whose tokenizer files are copied (its vocabulary must
    fit `vocab`); else a word-level tokenizer of `t0`..`t{vocab-1}` is written. `overrides`:
    config fields to set after the architecture's.
    """
    from mlx_lm.utils import _get_classes

    config = model_config(arch, **shapes) | (overrides or {})
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    model.update(tree_map_with_path(_randomized, model.parameters()))
    model.set_dtype(mx.float16)
    nn.quantize(model, GROUP_SIZE, 4, class_predicate=_quantization_of)
    weights = dict(tree_flatten(model.parameters()))
    if config["model_type"] == "gemma3_text":  # tied, as Gemma 3's checkpoints are
        weights = {k: v for k, v in weights.items() if not k.startswith("lm_head.")}
    config["quantization"] = {"group_size": GROUP_SIZE, "bits": 4} | {
        name: {"group_size": GROUP_SIZE, "bits": 8}
        for name in ("model.embed_tokens", "lm_head")
        if f"{name}.scales" in weights
    }
    path.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tokenizer_from / name).exists():
                shutil.copy(tokenizer_from / name, path / name)
    else:
        _write_word_tokenizer(path, config["vocab_size"])
    return path


def _randomized(name: str, a: mx.array) -> mx.array:
    """Norm weights and biases random too (mlx-lm initializes them to ones and zeros)."""
    if name.endswith("norm.weight"):
        return a + 0.2 * mx.random.normal(a.shape)
    if name.endswith(".bias"):
        return 0.5 * mx.random.normal(a.shape)
    return a


def _quantization_of(path: str, module: nn.Module) -> bool | dict[str, int]:
    """4-bit layers, 8-bit embedding and output head (as imported Q4 GGUF files have them)."""
    if not hasattr(module, "to_quantized") or module.weight.shape[-1] % GROUP_SIZE:
        return False
    if isinstance(module, nn.Embedding) or path.endswith("lm_head"):
        return {"group_size": GROUP_SIZE, "bits": 8}
    return True


def _write_word_tokenizer(path: Path, vocab: int) -> None:
    """A whitespace word-level tokenizer of `t0`..`t{vocab-1}` (`t1` is the end token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "t0",
                "eos_token": "t1",
                "bos_token": "t2",
            }
        )
    )
