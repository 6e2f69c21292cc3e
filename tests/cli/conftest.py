"""Fixtures of the CLI tests: a real `anvyl serve` subprocess per module, labelled containers."""

from fixtures_control_plane import make_container, served

__all__ = ["make_container", "served"]
