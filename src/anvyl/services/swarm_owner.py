"""What the Swarm modules need of the objects they are handed, as Protocols.

`SwarmDeployments` (and through it `SwarmRuntime`) is handed the deployment service
(`services.deployments.service`), and `swarm_nodes` is handed the `SwarmDeployments`; stating
what each uses keeps them from importing the module that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from anvyl.runtime.container import ImageProvider
    from anvyl.services.hosts import Hosts
    from anvyl.store import Store
    from anvyl.store.secrets import ApiKeys

Say = Callable[[str, str], None]  # (phase, message)


class Owner(Protocol):
    """What Swarm deployments need of the deployment service that owns them."""

    store: Store
    hosts: Hosts
    home: Path
    keys: ApiKeys
    controller_id: str
    container_labels: dict[str, str]
    image_provider: ImageProvider
