"""`anvyl` starts fast: a listing imports only what it needs (the CLI runs at every keystroke)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fixtures_control_plane import Served

# What the server side, the model server or rendering tables brings, and a plain
# `model ps -o json` never needs (pydantic came through Typer's value coercion from 0.27 on).
HEAVY = ("pydantic", "docker", "fastapi", "starlette", "uvicorn", "httpx", "mlx", "rich")
REPORT = (
    "import atexit, sys\n"
    "atexit.register(lambda: print(' '.join(sorted({m.split('.')[0] for m in sys.modules})),"
    " file=sys.stderr))\n"
    "from anvyl.cli.main import main\n"
    "main()\n"
)


def loaded_packages(served: Served, *args: str) -> set[str]:
    """The top-level packages an `anvyl ARGS` process had imported when it exited."""
    env = {**os.environ, "ANVYL_ADDR": served.address}
    result = subprocess.run(
        [sys.executable, "-c", REPORT, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stderr.strip().splitlines()[-1].split())


@pytest.mark.parametrize(
    "args",
    [
        ("model", "ps", "-o", "json"),
        ("container", "list", "-o", "json"),
        ("host", "list", "-o", "json"),
    ],
)
def test_json_listings_import_no_heavy_package(served: Served, args: tuple[str, ...]) -> None:
    loaded = loaded_packages(served, *args)
    assert "grpc" in loaded  # the report works: the call was made
    assert sorted(loaded & set(HEAVY)) == []
