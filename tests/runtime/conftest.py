"""Fixtures of the runtime tests."""

from fixtures_control_plane import make_container

__all__ = ["make_container"]
