"""Model ids: validation and derivation from folder names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anvyl.catalog.ids import MODEL_ID_RE, derive_model_id, validate_model_id
from anvyl.errors import InvalidArgument


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SmolLM2-135M-Instruct", "smollm2-135m-instruct-mlx"),
        ("Llama-3.2-1B-Instruct-4bit", "llama-3.2-1b-instruct-4bit-mlx"),
        ("Qwen2.5-0.5B-Instruct-MLX", "qwen2.5-0.5b-instruct-mlx"),
        ("mlx-community", "mlx-community"),
        ("Phi 3 (mini)", "phi-3-mini-mlx"),
        ("..", "model-mlx"),
        ("a..b", "a.b-mlx"),
    ],
)
def test_derive(name: str, expected: str) -> None:
    assert derive_model_id(name) == expected


@given(st.text(max_size=300))
def test_derived_ids_are_always_valid(name: str) -> None:
    model_id = derive_model_id(name)
    assert MODEL_ID_RE.match(model_id) and ".." not in model_id
    assert validate_model_id(model_id) == model_id


def test_validate_explains() -> None:
    with pytest.raises(InvalidArgument, match="path separators"):
        validate_model_id("../x")
    with pytest.raises(InvalidArgument, match="lower-case"):
        validate_model_id("A")
