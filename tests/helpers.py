"""Small helpers shared by the tests: free ports, waiting on a condition."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` s.

    Exceptions raised by `condition` count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:
            last_exc = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what or condition!r}"
        + (f" (last error: {last_exc!r})" if last_exc else "")
    )


def test_cache_dir() -> Path:
    """Where slow things (the converted bundled model, image build inputs) are kept between runs."""
    path = Path(os.environ.get("ANVYL_TEST_CACHE") or Path.home() / ".cache" / "anvyl-tests")
    path.mkdir(parents=True, exist_ok=True)
    return path


def imaging_cache_dir() -> Path:
    """Build inputs of the model-server image kept between runs (never required)."""
    return test_cache_dir() / "imaging"
