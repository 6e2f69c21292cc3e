"""Anvyl: run MLX-format LLMs as containerized, OpenAI-compatible model servers."""

from __future__ import annotations

from functools import cache

__all__ = ["__version__"]


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anvyl")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def __getattr__(name: str) -> str:
    # Looked up lazily: importlib.metadata costs ~25 ms, too much for every CLI start.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'anvyl' has no attribute {name!r}")
