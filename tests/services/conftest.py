"""Fixtures of the deployment-service unit tests (the store fixture is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME holding (a link to) the bundled model."""
    from models_harness import make_home

    return make_home(tmp_path / "home", bundled_model)
