"""`anvyl serve` whose model-server image tag names no image, so a start has to build one."""

from __future__ import annotations

import anvyl.imaging as imaging
import anvyl.imaging.naming as naming
from anvyl.cli.main import main

MISSING_TAG = "anvyl/modelserver:missing-lifecycle-test"


def missing_tag() -> str:
    """A tag no test or user ever builds."""
    return MISSING_TAG


if __name__ == "__main__":
    imaging.default_tag = naming.default_tag = missing_tag  # type: ignore[assignment]
    main()
