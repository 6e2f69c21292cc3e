"""Build Anvyl's model-server image (`image/Dockerfile`) offline-capable, through the Docker SDK.

    build_image(client, base_image=..., ca_bundle=..., tag=..., progress=..., cache_dir=...)
    ensure_image(client, cache_dir=...)   reuse when up to date; base chosen for this machine

Wheels are downloaded on the host for the base image's Python and architecture, the running
Anvyl package is packed as a wheel, and the build is skipped when the inputs' content hash
matches the `anvyl.build.hash` label of the existing image.
"""

from anvyl.imaging.base import DEBIAN_BASE_IMAGE, DEBIAN_BOOTSTRAP, DEFAULT_BASE_IMAGE
from anvyl.imaging.builder import (
    LABEL_BASE_IMAGE,
    LABEL_BUILD_HASH,
    LABEL_SOURCE_HASH,
    LABEL_VERSION,
    build_image,
    default_tag,
    ensure_image,
)
from anvyl.imaging.context import source_hash
from anvyl.imaging.errors import ImageBuildError

__all__ = [
    "DEBIAN_BASE_IMAGE",
    "DEBIAN_BOOTSTRAP",
    "DEFAULT_BASE_IMAGE",
    "LABEL_BASE_IMAGE",
    "LABEL_BUILD_HASH",
    "LABEL_SOURCE_HASH",
    "LABEL_VERSION",
    "ImageBuildError",
    "build_image",
    "default_tag",
    "ensure_image",
    "source_hash",
]
