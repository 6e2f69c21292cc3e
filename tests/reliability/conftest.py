"""Fixtures of the reliability tests (helpers live in tests/models_harness.py)."""

from __future__ import annotations

import pytest
from fixtures_control_plane import Served


def pytest_configure(config: pytest.Config) -> None:
    """Register the `slow` marker (load and fault scenarios; still run by default)."""
    config.addinivalue_line("markers", "slow: a load or fault scenario (minutes, still run in CI)")


@pytest.fixture(scope="module")
def served(model_served: Served) -> Served:
    """The module's `anvyl serve` (tests/conftest.py's `model_served`)."""
    return model_served
