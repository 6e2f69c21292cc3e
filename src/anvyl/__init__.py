"""Anvyl: run MLX-format LLMs as containerized, OpenAI-compatible model servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("anvyl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
