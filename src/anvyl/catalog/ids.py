"""Model ids: validation at the catalog's boundary and derivation from folder names."""

from __future__ import annotations

import re

from anvyl.errors import InvalidArgument

MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
MAX_ID_LENGTH = 128
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def validate_model_id(model_id: str) -> str:
    """Return `model_id` when it is a safe id, else raise InvalidArgument saying why."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidArgument("a model id is required")
    if "/" in model_id or "\\" in model_id or ".." in model_id:
        raise InvalidArgument(
            f"invalid model id {model_id!r}: ids may not contain path separators or '..'"
        )
    if not MODEL_ID_RE.match(model_id):
        raise InvalidArgument(
            f"invalid model id {model_id!r}: use 1-128 lower-case letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return model_id


def derive_model_id(name: str) -> str:
    """A safe id from a folder or file name, ending in `-mlx` unless `mlx` is already a word."""
    text = _UNSAFE.sub("-", name.strip().lower())
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"-{2,}", "-", text).strip("-._")
    if not text:
        text = "model"
    if "mlx" not in re.split(r"[._-]", text):
        text = f"{text[: MAX_ID_LENGTH - 4].rstrip('-._')}-mlx"
    return validate_model_id(text[:MAX_ID_LENGTH].rstrip("-._"))
