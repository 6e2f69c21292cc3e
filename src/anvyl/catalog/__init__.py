"""The model catalog: GGUF import, the bundled model, and discovery of MLX model directories."""

from anvyl.catalog.bundled import BUNDLED_MODELS, ensure_bundled_model, import_bundled
from anvyl.catalog.discovery import discover_models, remove_model, resolve_model
from anvyl.catalog.gguf_import import import_gguf, import_model
from anvyl.catalog.ids import derive_model_id, validate_model_id
from anvyl.catalog.model_info import ModelInfo, describe_model, estimate_memory

__all__ = [
    "BUNDLED_MODELS",
    "ModelInfo",
    "derive_model_id",
    "describe_model",
    "discover_models",
    "ensure_bundled_model",
    "estimate_memory",
    "import_bundled",
    "import_gguf",
    "import_model",
    "remove_model",
    "resolve_model",
    "validate_model_id",
]
