"""One websocket from the gateway to a replica's LM Studio namespace.

A client's socket to the gateway may use several replicas; each one it uses gets an `Upstream`:
the gateway's own hello (with the replica's key as a Bearer header), then calls and channels
multiplexed with the gateway's own ids. A background task owns the connection (httpx-ws needs
the connection opened and closed in one task); replies are handed back by call id and channel id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from typing import Any

import httpx
from httpx_ws import HTTPXWSException, aconnect_ws

from anvyl.gateway.routing import Replica

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Connection failures: the replica never answered, so another one may take the call.
UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, OSError)
GONE = {"type": "upstreamGone"}  # put on every open channel's queue when the socket ends


class UpstreamUnreachable(Exception):
    """The replica could not be connected to (it is marked down; try another)."""


class UpstreamRefused(Exception):
    """The replica answered but refused the socket or the hello (no point in retrying)."""


class Upstream:
    """A websocket to `replica`'s `/namespace`; open it with `await open()`."""

    def __init__(self, replica: Replica, namespace: str, client: httpx.AsyncClient) -> None:
        self.replica = replica
        self.namespace = namespace
        self._client = client
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._channels: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._ws: Any = None
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.alive = False

    async def open(self) -> None:
        """Connect and say hello; raise `UpstreamUnreachable` or `UpstreamRefused`."""
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"lmstudio-upstream-{self.url}")
        await self._ready
        self.alive = True

    @property
    def url(self) -> str:
        """`ws://address:port/namespace` of the replica."""
        base = self.replica.target.base_url
        return "ws" + base.removeprefix("http") + "/" + self.namespace

    async def call(self, endpoint: str, parameter: Any) -> dict[str, Any]:
        """Send an `rpcCall`; the replica's `rpcResult` or `rpcError` frame."""
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            frame: dict[str, Any] = {"type": "rpcCall", "endpoint": endpoint, "callId": call_id}
            if parameter is not None:
                frame["parameter"] = parameter
            await self._send(frame)
            return await future
        finally:
            self._calls.pop(call_id, None)

    async def create_channel(
        self, endpoint: str, parameter: Any
    ) -> tuple[int, asyncio.Queue[dict[str, Any]]]:
        """Open a channel; its id here and the queue of the replica's frames for it."""
        channel_id = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._channels[channel_id] = queue
        frame = {
            "type": "channelCreate",
            "endpoint": endpoint,
            "channelId": channel_id,
            "creationParameter": parameter,
        }
        try:
            await self._send(frame)
        except BaseException:
            self._channels.pop(channel_id, None)
            raise
        return channel_id, queue

    async def send_on_channel(self, channel_id: int, message: Any) -> None:
        """Pass a client's channel message (a `cancel`) on."""
        if channel_id in self._channels:
            await self._send({"type": "channelSend", "channelId": channel_id, "message": message})

    def forget_channel(self, channel_id: int) -> None:
        """Stop routing frames of a finished channel."""
        self._channels.pop(channel_id, None)

    async def close(self) -> None:
        """Close the socket (the replica cancels what it was doing for it)."""
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # ------------------------------------------------------------------ the connection

    async def _send(self, frame: dict[str, Any]) -> None:
        if not self.alive or self._ws is None:
            raise UpstreamRefused(f"the connection to {self.url} is closed")
        try:
            await self._ws.send_text(json.dumps(frame, ensure_ascii=False))
        except (HTTPXWSException, *UNREACHABLE) as exc:
            raise UpstreamRefused(f"the connection to {self.url} failed: {exc}") from exc

    async def _run(self) -> None:
        assert self._ready is not None
        headers = {}
        if self.replica.target.upstream_key:
            headers["Authorization"] = f"Bearer {self.replica.target.upstream_key}"
        try:
            async with aconnect_ws(
                self.url,
                self._client,
                headers=headers,
                max_message_size_bytes=MAX_FRAME_BYTES,
                keepalive_ping_interval_seconds=None,
            ) as ws:
                self._ws = ws
                await self._hello(ws)
                self._ready.set_result(None)
                while True:
                    self._route(json.loads(await ws.receive_text()))
        except asyncio.CancelledError:
            if not self._closing.is_set():
                raise
        except UNREACHABLE as exc:
            self._fail(UpstreamUnreachable(f"{self.url}: {type(exc).__name__}: {exc}"))
        except UpstreamRefused as exc:
            self._fail(exc)
        except Exception as exc:  # upgrade refused, socket closed, bad frame
            self._fail(UpstreamRefused(f"{self.url}: {type(exc).__name__}: {exc}"))
        finally:
            self.alive = False
            self._ws = None
            for future in self._calls.values():
                if not future.done():
                    future.set_exception(UpstreamRefused(f"the connection to {self.url} ended"))
            for queue in self._channels.values():
                queue.put_nowait(GONE)
            if not self._ready.done():
                self._ready.set_exception(UpstreamRefused(f"the connection to {self.url} ended"))

    async def _hello(self, ws: Any) -> None:
        hello = {
            "authVersion": 1,
            "clientIdentifier": f"anvyl-gateway-{uuid.uuid4().hex[:8]}",
            "clientPasskey": self.replica.target.upstream_key or uuid.uuid4().hex,
        }
        await ws.send_text(json.dumps(hello))
        reply = json.loads(await ws.receive_text(timeout=HELLO_TIMEOUT_S))
        if not (isinstance(reply, dict) and reply.get("success")):
            error = reply.get("error") if isinstance(reply, dict) else None
            title = error.get("title") if isinstance(error, dict) else "refused"
            raise UpstreamRefused(f"{self.url} refused the gateway's hello: {title}")

    def _fail(self, exc: Exception) -> None:
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_exception(exc)
        else:
            log.info("LM Studio connection to %s ended: %s", self.url, exc)

    def _route(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in ("rpcResult", "rpcError"):
            future = self._calls.get(frame.get("callId"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind in ("channelSend", "channelClose", "channelError"):
            queue = self._channels.get(frame.get("channelId"))  # type: ignore[arg-type]
            if queue is not None:
                queue.put_nowait(frame)
        elif kind == "communicationWarning":
            log.info("replica %s warned: %s", self.url, frame.get("warning"))
