"""The one error the image builder raises on purpose."""

from __future__ import annotations

from anvyl.errors import FailedPrecondition


class ImageBuildError(FailedPrecondition):
    """The model-server image could not be built; the message says why and what to do."""
