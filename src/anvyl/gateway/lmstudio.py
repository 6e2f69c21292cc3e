"""LM Studio's websocket API on the gateway: one `lms.Client` sees every running model.

The gateway speaks the same subset as each model server (see `anvyl.modelserver.lmstudio`):
listings are gathered from one healthy replica of each model; a call or a channel about one
model (`getOrLoad`, `predict`, `tokenize`, ...) goes to a replica of it, least outstanding
requests first, over the gateway's own websocket to that replica, and its answers come back
with the client's ids. A replica that cannot be reached is marked down and another one tried;
a `cancel` or a closed socket is passed on, which frees the replica's slot. Loading and
unloading (`model(key)`, `load_new_instance`, `unload`) follow `lmstudio_loads.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.websockets import WebSocket

from anvyl.gateway import lmstudio_loads as loads
from anvyl.gateway.routing import Replica, RoutingTable
from anvyl.gateway.upstream import GONE, Upstream, UpstreamRefused, UpstreamUnreachable
from anvyl.modelserver.lmstudio import protocol as p
from anvyl.modelserver.lmstudio.framing import SocketSession

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from anvyl.catalog import ModelInfo
    from anvyl.gateway.ondemand import Loader

log = logging.getLogger(__name__)

# Calls about one model, passed to a replica of it (the model server answers them itself).
ROUTED_CALLS = frozenset(p.RPC_CALLS) - {
    "llm.listLoaded",
    "embedding.listLoaded",
    "system.listDownloadedModels",
}
TOKEN_REFUSED = p.ProtocolError(
    "This Anvyl gateway requires an access token, and the LM Studio SDK (1.5) cannot send one",
    suggestion=(
        "Use the gateway's OpenAI-compatible API with 'Authorization: Bearer <token>', or run"
        " `anvyl serve` on loopback without a token to use the LM Studio SDK."
    ),
)


class Gateway(Protocol):
    """What the relay needs of the gateway that hosts it (`anvyl.gateway.app.Gateway`)."""

    table: RoutingTable
    client: httpx.AsyncClient
    token: str | None
    loader: Loader | None  # loads stopped models (None: never)
    startable: Callable[[], list[ModelInfo]]  # the models a request may start

    def all_client_keys(self) -> set[str]:
        """Every model's own key that clients may send."""
        ...

    def accepts(self, given: str | None, client_keys: set[str]) -> bool:
        """The server's token, or the model's own API key, when either is required."""
        ...


async def serve_socket(gateway: Gateway, websocket: WebSocket) -> None:
    """Serve one client websocket (`ws://gateway/<namespace>`)."""
    namespace = websocket.url.path.strip("/")
    if namespace not in p.NAMESPACES:
        await websocket.close(code=1008)
        return
    await Session(gateway, websocket, namespace).run()


@dataclass
class _Channel:
    """A client channel relayed to a replica."""

    task: asyncio.Task[None] | None = None
    upstream: Upstream | None = None
    upstream_id: int | None = None
    pending: list[Any] = field(default_factory=list)  # client messages before it was open


class Session(SocketSession):
    """The gateway side of one client websocket in one namespace."""

    def __init__(self, gateway: Gateway, ws: WebSocket, namespace: str) -> None:
        super().__init__(ws, namespace)
        self.gateway = gateway
        self._upstreams: dict[str, Upstream] = {}
        self._channels: dict[Any, _Channel] = {}

    def refusal(self) -> p.ProtocolError | None:
        """With a token, only a client that sent it (or some model's own key) gets in."""
        if not self.gateway.token:
            return None
        accepted = self.gateway.accepts(self.credential, self.gateway.all_client_keys())
        return None if accepted else TOKEN_REFUSED

    def on_channel(self, channel_id: Any, endpoint: str, param: Any) -> None:
        """Relay the channel to a replica of its model."""
        if channel_id in self._channels:
            self.spawn(self.send(p.warning(f"channel {channel_id!r} is already open")))
            return
        channel = self._channels[channel_id] = _Channel()
        channel.task = asyncio.ensure_future(self._relay(channel_id, channel, endpoint, param))

    def on_channel_message(self, channel_id: Any, message: Any) -> None:
        """A client's message on a channel (its `cancel`) goes to the replica."""
        channel = self._channels.get(channel_id)
        if channel is not None:
            self.spawn(self._pass_on(channel, message))

    async def closed(self) -> None:
        """Stop the relays and close every upstream socket (the replicas cancel their work)."""
        for channel in list(self._channels.values()):
            if channel.task is not None:
                channel.task.cancel()
        await asyncio.gather(*(u.close() for u in self._upstreams.values()))

    def _may_use(self, replicas: list[Replica]) -> bool:
        """The HTTP rules: the server's token or the model's own key, when either is set."""
        return self.gateway.accepts(self.credential, {r.target.client_key for r in replicas})

    # ------------------------------------------------------------------ calls

    async def on_call(self, call_id: Any, endpoint: str, param: Any) -> None:
        """Answer a listing here; pass a call about one model to a replica of it."""
        name = f"{self.namespace}.{endpoint}"
        try:
            if name == "llm.listLoaded":
                frame = p.rpc_result(call_id, await self._gather(endpoint))
            elif name == "system.listDownloadedModels":
                running = await self._gather(endpoint)
                startable = loads.downloaded_entries(
                    self.gateway.startable(), set(self.gateway.table.models())
                )
                frame = p.rpc_result(call_id, running + startable)
            elif name == "llm.unloadModel":
                identifier = param.get("identifier") if isinstance(param, dict) else None
                model = self._model_of({"identifier": identifier}) if identifier else ""
                if not model:
                    raise p.ProtocolError("unloadModel needs the identifier of a loaded model")
                await loads.unload(self.gateway, model)
                frame = p.rpc_result(call_id, None)
            elif name == "embedding.listLoaded":
                frame = p.rpc_result(call_id, [])
            elif name in ROUTED_CALLS:
                specifier = param.get("specifier") if isinstance(param, dict) else None
                upstream = await self._upstream_for(self._model_of(specifier))
                reply = await upstream.call(endpoint, param)
                frame = {k: v for k, v in reply.items() if k != "callId"} | {"callId": call_id}
            else:
                raise p.unsupported(self.namespace, endpoint, "call")
        except p.ProtocolError as err:
            quiet = isinstance(param, dict) and not param.get("throwIfNotFound")
            if name == "llm.getModelInfo" and quiet and err.code == p.NO_MODEL_CODE:
                await self.send(p.rpc_result(call_id, None))  # "not found" is an answer here
                return
            frame = p.rpc_error(call_id, err.error())
        except UpstreamRefused as exc:
            frame = p.rpc_error(call_id, {"title": f"the model's server failed: {exc}"})
        await self.send(frame)

    async def _gather(self, endpoint: str) -> list[Any]:
        """A listing from one healthy replica of each model this client may use."""

        async def one(model: str) -> list[Any]:
            try:
                reply = await (await self._upstream_for(model)).call(endpoint, None)
            except (p.ProtocolError, UpstreamRefused) as exc:
                log.info("no %s from a replica of %s: %s", endpoint, model, exc)
                return []
            result = reply.get("result")
            return [e for e in result if _entry_model(e) == model] if result else []

        models = sorted(m for m, rs in self.gateway.table.models().items() if self._may_use(rs))
        results = await asyncio.gather(*(one(m) for m in models))
        return [entry for entries in results for entry in entries]

    # ------------------------------------------------------------------ channels

    async def _relay(self, channel_id: Any, channel: _Channel, endpoint: str, param: Any) -> None:
        """Open the channel on a replica of its model and pass its frames back until it ends."""
        name = f"{self.namespace}.{endpoint}"
        replica: Replica | None = None
        try:
            model, endpoint, param = await self._loaded_model(channel_id, name, endpoint, param)
            upstream = await self._upstream_for(model)
            replica = upstream.replica
            replica.outstanding += 1
            upstream_id, queue = await upstream.create_channel(endpoint, param)
            channel.upstream, channel.upstream_id = upstream, upstream_id
            for message in channel.pending:
                await upstream.send_on_channel(upstream_id, message)
            try:
                await self._pass_back(channel_id, queue, model)
            finally:
                upstream.forget_channel(upstream_id)
        except p.ProtocolError as err:
            await self.send(p.channel_error(channel_id, err.error()))
        except UpstreamRefused as exc:
            error = {"title": f"the model's server failed: {exc}"}
            await self.send(p.channel_error(channel_id, error))
        finally:
            if replica is not None:
                replica.outstanding -= 1
            self._channels.pop(channel_id, None)

    async def _pass_back(self, channel_id: Any, queue: asyncio.Queue[Any], model: str) -> None:
        while True:
            frame = await queue.get()
            if frame is GONE:
                title = f"the replica serving {model} went away before the answer was complete"
                await self.send(p.channel_error(channel_id, {"title": title}))
                return
            await self.send({**frame, "channelId": channel_id})
            if frame.get("type") in ("channelClose", "channelError"):
                return

    async def _pass_on(self, channel: _Channel, message: Any) -> None:
        """A client's message on a channel (its `cancel`) goes to the replica."""
        if channel.upstream is None or channel.upstream_id is None:
            channel.pending.append(message)
            return
        with contextlib.suppress(UpstreamRefused):
            await channel.upstream.send_on_channel(channel.upstream_id, message)

    async def _loaded_model(
        self, channel_id: Any, name: str, endpoint: str, param: Any
    ) -> tuple[str, str, Any]:
        """The running model a channel is about, loaded first where the channel asks for it or
        names a stopped one; with the endpoint and parameter to open on its replica."""
        if name == "llm.loadModel":  # a model not running: load it, then hand it out
            refused = loads.load_refusal(self.gateway)
            if refused is not None:
                raise refused
            model, ttl = loads.new_instance(param, self._running)
            await self._load(channel_id, model, ttl)
            endpoint, param = "getOrLoad", {"identifier": model, "loadConfigStack": {"layers": []}}
        elif name == "llm.getOrLoad":
            identifier = param.get("identifier") if isinstance(param, dict) else None
            if isinstance(identifier, str) and identifier:
                await self._load(channel_id, identifier, loads.ttl_seconds(param, "loadTtlMs"))
        elif name == "llm.predict":
            specifier = param.get("modelSpecifier") if isinstance(param, dict) else None
            named = _named_model(specifier)
            if named is not None:
                await loads.ensure_loaded(self.gateway, named, None, self._running)
            return self._model_of(specifier), endpoint, param
        else:
            raise p.unsupported(self.namespace, endpoint, "channel")
        identifier = param.get("identifier") if isinstance(param, dict) else None
        query = {"type": "query", "query": {"identifier": identifier}}
        return self._model_of(query), endpoint, param

    async def _load(self, channel_id: Any, model: str, ttl: float | None) -> None:
        """Load `model` if it is stopped, telling the client (`startLoading`) while it loads."""
        if not self._running(model) and loads.load_refusal(self.gateway) is None:
            await self.send(p.channel_send(channel_id, {"type": "startLoading"}))
        await loads.ensure_loaded(self.gateway, model, ttl, self._running)

    def _running(self, model: str) -> bool:
        return bool(self.gateway.table.models().get(model))

    # ------------------------------------------------------------------ routing

    def _model_of(self, specifier: Any) -> str:
        """The running model a specifier names (any one for an empty query); else refuse."""
        models = {m: rs for m, rs in self.gateway.table.models().items() if self._may_use(rs)}
        named = _named_model(specifier)
        if named is None:
            ready = sorted(m for m, rs in models.items() if any(r.healthy for r in rs))
            if not ready:
                raise p.ProtocolError("no model runs behind this gateway", code=p.NO_MODEL_CODE)
            return ready[0]
        if named in models:
            return named
        if named in self.gateway.table.models():
            raise p.ProtocolError(
                f"the model {named!r} requires an API key, and the LM Studio SDK (1.5) cannot"
                " send one",
                suggestion="Use the gateway's OpenAI-compatible API with that key.",
            )
        running = ", ".join(sorted(models)) or "none"
        raise p.ProtocolError(
            f"No model matching {named!r} is running behind this gateway (running: {running})",
            suggestion=f"Start it with `anvyl model start {named}`.",
            code=p.NO_MODEL_CODE,
        )

    async def _upstream_for(self, model: str) -> Upstream:
        """A socket to a healthy replica of `model`, least outstanding requests first."""
        tried: list[Replica] = []
        last = ""
        while True:
            replica = self.gateway.table.pick(model, tried)
            if replica is None:
                detail = f" (last error: {last})" if last else ""
                raise p.ProtocolError(
                    f"no healthy replica of {model} right now; retry shortly{detail}"
                )
            tried.append(replica)
            key = replica.target.key
            upstream = self._upstreams.get(key)
            if upstream is not None and upstream.alive and upstream.replica is replica:
                return upstream
            upstream = Upstream(replica, self.namespace, self.gateway.client)
            try:
                await upstream.open()
            except UpstreamUnreachable as exc:
                log.info("replica %s unreachable (%s); marking it down", key, exc)
                self.gateway.table.set_health(key, False)
                last = str(exc)
                continue
            old = self._upstreams.get(key)
            self._upstreams[key] = upstream
            if old is not None:
                self.spawn(old.close())
            return upstream


def _named_model(specifier: Any) -> str | None:
    """The model id in a specifier (instance references are model ids here), or None."""
    if not isinstance(specifier, dict):
        return None
    if specifier.get("type") == "instanceReference":
        ref = specifier.get("instanceReference")
        return ref if isinstance(ref, str) and ref else None
    query = specifier.get("query", specifier)
    if not isinstance(query, dict):
        return None
    for key in ("identifier", "path"):
        value = query.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _entry_model(entry: Any) -> str | None:
    """The model id of a listing entry."""
    if not isinstance(entry, dict):
        return None
    value = entry.get("identifier") or entry.get("modelKey")
    return value if isinstance(value, str) else None
