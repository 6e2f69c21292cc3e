"""Load on first request: hold a request for a stopped model until it is served, then route it.

The gateway asks the control plane's `OnDemand` (passed in as `Demand`) to start the model;
any number of concurrent first requests share one start. Nothing is sent to the client before
the model is ready; a client that goes away stops waiting (the last one cancels the start); the
wait is capped (`--load-timeout`); a failed start is a 503 naming why. Every routed request is
counted in flight, so a model serving one never unloads.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from anvyl.errors import AnvylError, NotFound, ResourceExhausted
from anvyl.gateway.routing import RoutingTable
from anvyl.services.ondemand.loads import LoadCancelled
from anvyl.services.ondemand.policy import parse_keep_alive

WAIT_FOR_DEPLOYMENT_S = 0.25  # a deployment exists but the routing table has not seen it yet
UNLOAD_RETRY_AFTER_S = 2


class Load(Protocol):
    """A start in flight (`services.ondemand.Load`)."""

    future: Future[Any]


class Demand(Protocol):
    """What the gateway needs of on-demand loading (`services.ondemand.OnDemand`)."""

    def join(self, model_id: str, *, keep_alive: float | None = None) -> Load | None: ...

    def leave(self, load: Any) -> None: ...

    def begin(self, model_id: str) -> bool: ...

    def end(self, model_id: str) -> None: ...

    def unloading(self, model_id: str) -> threading.Event | None: ...

    def set_keep_alive(self, model_id: str, seconds: float) -> None: ...

    def unload_model(self, model_id: str) -> None: ...

    def unload_all(self, model_id: str, why: str) -> list[str]: ...

    def starting(self, model_id: str) -> bool: ...

    def expiries(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Refusal:
    """Why a request cannot be served now: an HTTP status, a message and a retry hint."""

    status: int
    message: str
    code: str
    retry_after: int = 0


class ClientGone(Exception):
    """The client disconnected while its model was loading."""


class Loader:
    """Brings a model up for a request, or says why it cannot."""

    def __init__(
        self,
        demand: Demand,
        table: RoutingTable,
        refresh: Callable[[], Awaitable[None]],
        *,
        autostart: bool,
        timeout: float,
    ) -> None:
        self.demand = demand
        self.table = table
        self.refresh = refresh
        self.autostart = autostart
        self.timeout = timeout

    async def acquire(
        self,
        model: str,
        disconnected: Callable[[], asyncio.Future[Any]],
        keep_alive: float | None = None,
        *,
        running_too: bool = True,
    ) -> Refusal | bool:
        """Count a request to `model` in flight once a replica can take it (starting the model
        when it is stopped and autostart is on): True when counted (`release` it after);
        False when the proxy should answer as it would without on-demand loading (not counted);
        a Refusal to send. ClientGone when the client leaves while waiting.

        `keep_alive` applies to a start this request causes and, with `running_too`
        (Ollama's `keep_alive`; not LM Studio's `ttl`), to the model's running deployments."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        reprobed = False
        if keep_alive is not None and running_too:
            await asyncio.to_thread(self.demand.set_keep_alive, model, keep_alive)
        while True:
            if self.demand.unloading(model) is None and self.table.serving(model):
                if self.demand.begin(model):
                    return True
                continue  # it began to unload just now: wait for it below
            if not self.autostart:
                return False  # the proxy answers as without on-demand loading (404 or 503)
            try:
                load = await asyncio.to_thread(self.demand.join, model, keep_alive=keep_alive)
            except NotFound:
                return False  # not imported: the proxy's "does not exist" answer
            left = deadline - loop.time()
            if load is None:  # a deployment exists: wait while it is starting
                if not await asyncio.to_thread(self.demand.starting, model):
                    if reprobed:
                        return False  # it is down: 503 as before
                    reprobed = True  # a probe may have failed under load: look once more
                    await self.refresh()
                    continue
                if left <= 0:
                    return _timed_out(model, self.timeout)
                await _wait(disconnected(), min(WAIT_FOR_DEPLOYMENT_S, left))
                await self.refresh()
                continue
            try:
                done = asyncio.wrap_future(load.future)
                await _wait(disconnected(), left, done)
            finally:
                self.demand.leave(load)
            if not load.future.done():
                return _timed_out(model, self.timeout)
            error = load.future.exception()
            if error is not None:
                refusal = _refusal(model, error)
                if refusal is not None:
                    return refusal
                continue  # cancelled by others leaving while this one still waits: again
            await self.refresh()

    def unload(self, model: str) -> None:
        """Unload the idle deployments of `model` now (Ollama's `keep_alive: 0` with no prompt)."""
        self.demand.unload_model(model)

    def release(self, model: str) -> None:
        """The request counted by `acquire` is done."""
        self.demand.end(model)


async def _wait(
    disconnected: asyncio.Future[Any], timeout: float, done: asyncio.Future[Any] | None = None
) -> None:
    """Wait for `done` (or just `timeout`), raising ClientGone if the client leaves first."""
    waiting = {disconnected} if done is None else {disconnected, done}
    await asyncio.wait(waiting, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    if disconnected.done():
        raise ClientGone


def _refusal(model: str, error: BaseException) -> Refusal | None:
    if isinstance(error, LoadCancelled):
        return None
    if isinstance(error, ResourceExhausted):
        return Refusal(503, error.message, "insufficient_memory", UNLOAD_RETRY_AFTER_S * 5)
    message = error.message if isinstance(error, AnvylError) else str(error)
    return Refusal(503, f"could not start {model}: {message}", "model_load_failed")


def _timed_out(model: str, timeout: float) -> Refusal:
    return Refusal(
        503,
        f"{model} is still loading after {timeout:.0f} s (--load-timeout); retry shortly",
        "model_loading",
        UNLOAD_RETRY_AFTER_S,
    )


def requested_keep_alive(path: str, body: bytes) -> tuple[float | None, bool]:
    """The keep-alive a request asks for, and whether it applies to running deployments too:
    Ollama's `keep_alive` (yes), LM Studio's `ttl` in seconds (no: only to a load it causes).
    ValueError naming the field when it is not a duration."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, False
    if not isinstance(data, dict):
        return None, False
    for field in ("keep_alive", "ttl"):
        value = data.get(field)
        if value is None:
            continue
        try:
            return parse_keep_alive(value, what=field), field == "keep_alive"
        except AnvylError as exc:
            raise ValueError(exc.message) from exc
    return None, False
