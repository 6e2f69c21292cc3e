"""`anvyl image build` on the server: the model-server image built on a host's engine.

The CLI sends what the user gave (the CA bundle's content, not a path on the client's
machine); the build runs here, through the runtime's one Docker edge, and streams its lines.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anvyl.errors import InvalidArgument
from anvyl.imaging import DEFAULT_BASE_IMAGE
from anvyl.services.hosts import Hosts

MAX_CA_BUNDLE_BYTES = 1 << 20
PEM_MARKER = b"-----BEGIN CERTIFICATE-----"
# An image reference as Docker parses it: [registry[:port]/]path[:tag][@digest], path lowercase.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
REFERENCE = re.compile(
    rf"(?:{_DOMAIN}(?:\.{_DOMAIN})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?P<digest>@sha256:[0-9a-f]{64})?"
)


@dataclass(frozen=True)
class BuiltImage:
    """The image a build made (or found up to date)."""

    ref: str
    size_bytes: int


def build_image(
    hosts: Hosts,
    *,
    host_ref: str = "",
    base_image: str = "",
    ca_bundle: bytes = b"",
    tag: str = "",
    progress: Callable[[str], None],
    cache_dir: Path,
    container_labels: dict[str, str] | None = None,
) -> BuiltImage:
    """Build the model-server image on `host_ref`'s engine (this machine's when empty)."""
    if len(ca_bundle) > MAX_CA_BUNDLE_BYTES:
        raise InvalidArgument(f"--ca-bundle is over {MAX_CA_BUNDLE_BYTES >> 20} MiB")
    if ca_bundle and PEM_MARKER not in ca_bundle:
        raise InvalidArgument("--ca-bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    for option, value in (("--base-image", base_image), ("--tag", tag)):
        found = REFERENCE.fullmatch(value) if value else None
        if value and (found is None or (option == "--tag" and found["digest"])):
            raise InvalidArgument(
                f"invalid {option} {value!r}: give an image reference such as "
                "anvyl/modelserver:custom (lowercase repository, tag of letters, digits, . _ -)"
            )
    if host_ref.strip():
        host = hosts.resolve(host_ref)
    else:
        local = hosts.local()
        if local is None:
            raise InvalidArgument("no local host is registered; pass --host-id")
        host = local
    driver = hosts.driver(host.id)
    with tempfile.TemporaryDirectory(prefix="anvyl-ca-") as tmp:
        bundle = None
        if ca_bundle:
            bundle = Path(tmp) / "ca-bundle.pem"
            fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(ca_bundle)
        ref = driver.build_image(
            base_image=base_image or DEFAULT_BASE_IMAGE,
            ca_bundle=bundle,
            tag=tag or None,
            progress=progress,
            cache_dir=cache_dir,
            container_labels=dict(container_labels or {}),
        )
    return BuiltImage(ref=ref, size_bytes=driver.image_size(ref))
