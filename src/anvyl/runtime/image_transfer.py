"""An image moved from one engine to another without a registry: `image save` piped into `load`.

The source engine's `GET /images/{name}/get` stream goes straight into the target's
`POST /images/load` (nothing touches the disk on the way). Errors are Anvyl's
(`DockerDriver.engine_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from anvyl.errors import FailedPrecondition, NotFound
from anvyl.runtime.driver import DockerDriver

CHUNK = 1 << 20


def image_id(driver: DockerDriver, image: str) -> str:
    """The image's id on that engine; empty when it is missing."""
    try:
        with driver.engine_errors():
            return str(driver.client.api.inspect_image(image)["Id"])
    except NotFound:
        return ""


def transfer_image(
    source: DockerDriver,
    target: DockerDriver,
    image: str,
    *,
    progress: Callable[[int], None] = lambda _sent: None,
    where: str = "",
) -> int:
    """Load the source engine's `image` into the target engine; the bytes streamed.

    `progress(sent)` is called as the bytes go; `where` names the target in errors.
    """
    where = where or target.base_url
    sent = 0
    with source.engine_errors():
        stream = source.client.api.get_image(image, chunk_size=CHUNK)

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        with source.engine_errors():
            for chunk in stream:
                sent += len(chunk)
                progress(sent)
                yield chunk

    with target.engine_errors():
        for event in target.client.api.load_image(chunks()):
            if isinstance(event, dict) and event.get("error"):
                raise FailedPrecondition(f"{where} refused the image: {event['error']}")
    return sent
