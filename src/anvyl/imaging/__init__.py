"""What goes into Anvyl's model-server image (`image/Dockerfile`), without touching an engine.

    assemble_context(...)   the build context: Dockerfile, wheels, the running Anvyl as a wheel
    ensure_wheels(...)      wheels for the base image's Python and architecture, cached
    default_tag()           anvyl/modelserver:<version> (or ANVYL_IMAGE_TAG)

Pulling the base, building, skipping an up-to-date image and importing the Debian base happen
on the engine, so they live with the runtime: `anvyl.runtime.images` (`build_image`,
`ensure_image`), or the driver's `DockerDriver.build_image` / `ensure_image` verbs.
"""

from anvyl.imaging.base import DEBIAN_BASE_IMAGE, DEBIAN_BOOTSTRAP, DEFAULT_BASE_IMAGE
from anvyl.imaging.context import source_hash
from anvyl.imaging.errors import ImageBuildError
from anvyl.imaging.naming import (
    LABEL_BASE_IMAGE,
    LABEL_BUILD_HASH,
    LABEL_SOURCE_HASH,
    LABEL_VERSION,
    default_tag,
)

__all__ = [
    "DEBIAN_BASE_IMAGE",
    "DEBIAN_BOOTSTRAP",
    "DEFAULT_BASE_IMAGE",
    "LABEL_BASE_IMAGE",
    "LABEL_BUILD_HASH",
    "LABEL_SOURCE_HASH",
    "LABEL_VERSION",
    "ImageBuildError",
    "default_tag",
    "source_hash",
]
