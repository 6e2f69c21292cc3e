"""Fixtures of the deployment-service unit tests: a model home and a store with a local host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anvyl.store import Store
from anvyl.store import hosts as host_table


@pytest.fixture
def home(tmp_path: Path, bundled_model: Path) -> Path:
    """An ANVYL_HOME holding (a link to) the bundled model."""
    from models_harness import make_home

    return make_home(tmp_path / "home", bundled_model)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store whose local host has no engine (the fakes need none)."""
    db = Store(tmp_path / "anvyl.db")
    host_table.ensure_local_host(db, address="fake://local")
    yield db
    db.close()
