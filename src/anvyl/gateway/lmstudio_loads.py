"""LM Studio's load and unload semantics on the gateway, over Anvyl's models on demand.

`client.llm.model(key)` (the `getOrLoad` channel) and a `predict` naming a stopped model load it
as any gateway request does (one start for all concurrent callers); the SDK's `ttl` becomes the
keep-alive of a start it causes (never of a model already running, which keeps its own).
`load_new_instance(key)` (`loadModel`) starts a model that is not running: Anvyl runs one
instance per model here, so a second instance, an instance identifier or load-config fields are
refused by name rather than ignored. `model.unload()` (`unloadModel`) stops every deployment of
the model, as an idle unload does: a request arriving meanwhile waits and loads it again.
`listDownloadedModels` lists the running and the startable models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from anvyl.gateway.ondemand import ClientGone, Loader, Refusal
from anvyl.modelserver.lmstudio import protocol as p

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo


class Hosting(Protocol):
    """What loading needs of the gateway (`anvyl.gateway.app.Gateway`)."""

    loader: Loader | None
    startable: Callable[[], list[ModelInfo]]


def load_refusal(gateway: Hosting) -> p.ProtocolError | None:
    """Why this gateway cannot load models (None when it can)."""
    if gateway.loader is None or not gateway.loader.autostart:
        return p.ProtocolError(
            "Anvyl's gateway serves the models that are running; it does not load others "
            "(`anvyl serve --no-autostart`)",
            suggestion="Start it with `anvyl model start`, then use client.llm.model(key).",
        )
    return None


def ttl_seconds(param: Any, field: str) -> float | None:
    """The SDK's TTL (`loadTtlMs` of getOrLoad, `ttlMs` of loadModel) in seconds, if sent."""
    value = param.get(field) if isinstance(param, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise p.ProtocolError(f"invalid {field} {value!r}: a number of milliseconds, 0 or more")
    return value / 1000.0


async def ensure_loaded(
    gateway: Hosting, model: str, ttl: float | None, running: Callable[[str], bool]
) -> None:
    """Load `model` unless it runs (waiting for its start, shared with other requests);
    ProtocolError naming why it cannot be served. Does nothing when loading is off."""
    loader = gateway.loader
    if loader is None or not loader.autostart:
        return
    keep = None if running(model) else ttl  # a TTL is for the start it causes, if any
    gone: asyncio.Future[Any] = asyncio.get_running_loop().create_future()  # the socket's
    try:
        outcome = await loader.acquire(model, lambda: gone, keep, running_too=False)
    except ClientGone:  # cannot happen: the socket closing cancels this task instead
        raise p.ProtocolError(f"stopped waiting for {model} to load") from None
    if isinstance(outcome, Refusal):
        raise p.ProtocolError(outcome.message, code=outcome.code)
    if outcome:
        loader.release(model)  # loaded: the channel that follows is not a request in flight


def new_instance(param: Any, running: Callable[[str], bool]) -> tuple[str, float | None]:
    """The model a `loadModel` names and its TTL; ProtocolError for what Anvyl cannot do."""
    if not isinstance(param, dict) or not isinstance(param.get("modelKey"), str):
        raise p.ProtocolError("loadModel needs a modelKey")
    model = param["modelKey"]
    identifier = param.get("identifier")
    if identifier not in (None, "", model):
        raise p.ProtocolError(
            f"Anvyl names each loaded model by its key: the instance identifier {identifier!r} "
            "cannot be given",
            suggestion=f"Load it without one; its identifier is {model!r}.",
        )
    fields = sorted(p.kv_fields(param.get("loadConfigStack")))
    if fields:
        raise p.ProtocolError(
            f"Anvyl's gateway cannot apply load settings ({', '.join(fields)}): a model loads "
            "with the options of its last `anvyl model start`",
            suggestion=f"Start it with those options: `anvyl model start {model} --ctx ...`.",
        )
    if running(model):
        raise p.ProtocolError(
            f"{model} is already loaded, and Anvyl's gateway runs one instance of each model",
            suggestion=f"Use client.llm.model({model!r}) to get it.",
        )
    return model, ttl_seconds(param, "ttlMs")


async def unload(gateway: Hosting, model: str) -> list[str]:
    """Stop every deployment of `model` (waiting until they are gone); their names."""
    loader = gateway.loader
    if loader is None:
        raise p.unsupported("llm", "unloadModel", "call")
    names = await asyncio.to_thread(
        loader.demand.unload_all, model, "unloaded by an LM Studio client"
    )
    if not names:
        raise p.ProtocolError(f"{model} is not loaded", code=p.NO_MODEL_CODE)
    await loader.refresh()
    return names


def downloaded_entries(startable: Sequence[ModelInfo], running: set[str]) -> list[dict[str, Any]]:
    """`LlmInfo` entries of the models that can be loaded but do not run."""
    return [
        p.ServedModel(
            key=info.id,
            arch=info.architecture or "unknown",
            context_length=info.context_length or 0,
            size_bytes=info.size_bytes,
            trained_for_tools=info.tool_format not in (None, "", "generic"),
        ).llm_info()
        for info in startable
        if info.id not in running
    ]
