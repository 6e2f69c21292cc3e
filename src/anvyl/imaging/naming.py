"""What the model-server image is called and the labels it carries (no engine needed)."""

from __future__ import annotations

import os

import anvyl
from anvyl.config import IMAGE_REPOSITORY

LABEL_VERSION = "anvyl.version"
LABEL_BUILD_HASH = "anvyl.build.hash"
LABEL_BASE_IMAGE = "anvyl.base.image"
LABEL_SOURCE_HASH = "anvyl.source.hash"


def default_tag() -> str:
    """`anvyl/modelserver:<version of this Anvyl>`, or `ANVYL_IMAGE_TAG` when set.

    The override lets several checkouts share one engine without rebuilding each other's image
    (the image is rebuilt whenever its sources differ from the running Anvyl's).
    """
    return os.environ.get("ANVYL_IMAGE_TAG") or f"{IMAGE_REPOSITORY}:{anvyl.__version__}"
