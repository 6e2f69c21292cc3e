"""The server side of one LM Studio websocket: hello, frames in and out, and their dispatch.

Shared by the model server (which answers from its engine) and the gateway (which relays to
replicas): a subclass decides whether a hello is accepted and what each call, channel and
channel message does. Each call runs as its own task, so a long one never blocks a `cancel`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from anvyl.modelserver.lmstudio import protocol as p


class SocketSession:
    """One client websocket in one namespace; `run()` serves it until it closes."""

    def __init__(self, ws: WebSocket, namespace: str) -> None:
        self.ws = ws
        self.namespace = namespace
        self.credential: str | None = None  # a Bearer header on the upgrade, or the passkey
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._open = True

    async def run(self) -> None:
        """Serve the socket until it closes; then `closed()` cleans up what it started."""
        await self.ws.accept()
        try:
            if not await self._hello():
                return
            while True:
                self._dispatch(await self._receive())
        except WebSocketDisconnect:
            pass
        finally:
            self._open = False
            for task in list(self._tasks):
                task.cancel()
            await self.closed()

    # ------------------------------------------------------------------ for subclasses

    def refusal(self) -> p.ProtocolError | None:
        """Why the hello is refused (`self.credential` is set by then), or None to accept it."""
        return None

    async def on_call(self, call_id: Any, endpoint: str, param: Any) -> None:
        """Answer one `rpcCall` (runs as its own task)."""
        raise NotImplementedError

    def on_channel(self, channel_id: Any, endpoint: str, param: Any) -> None:
        """Start one channel (its own task, kept by the subclass)."""
        raise NotImplementedError

    def on_channel_message(self, channel_id: Any, message: Any) -> None:
        """A client's message on an open channel (a `cancel`)."""

    async def closed(self) -> None:
        """The socket is gone: stop what it started."""

    def credential_matches(self, key: str) -> bool:
        """Constant-time check of the client's credential against `key`."""
        given = self.credential
        return given is not None and hmac.compare_digest(given.encode(), key.encode())

    # ------------------------------------------------------------------ framing

    async def _hello(self) -> bool:
        """Read the client's first frame; accept it or refuse it and close."""
        try:
            hello = json.loads(await self._receive())
        except json.JSONDecodeError:
            hello = None
        if not isinstance(hello, dict) or "authVersion" not in hello:
            return await self._refuse(p.ProtocolError("expected LM Studio's hello first"))
        scheme, _, token = self.ws.headers.get("authorization", "").partition(" ")
        passkey = hello.get("clientPasskey")
        if scheme.lower() == "bearer" and token.strip():
            self.credential = token.strip()
        elif isinstance(passkey, str):
            self.credential = passkey
        refusal = self.refusal()
        if refusal is not None:
            return await self._refuse(refusal)
        await self.send({"success": True})
        return True

    async def _refuse(self, err: p.ProtocolError) -> bool:
        await self.send({"success": False, "error": err.error()})
        await self.ws.close(code=1008)
        return False

    async def _receive(self) -> str:
        """The next frame's text (binary frames are decoded as UTF-8)."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        return str(text)

    async def send(self, message: dict[str, Any]) -> None:
        """Send one frame (dropped once the socket is gone)."""
        if not self._open:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except Exception:  # the client went away; its tasks are being cancelled
                self._open = False

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run `coro` as a task the session cancels when the socket closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError:
            self.spawn(self.send(p.warning("a frame was not valid JSON")))
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "rpcCall":
            endpoint = str(msg.get("endpoint"))
            self.spawn(self.on_call(msg.get("callId"), endpoint, msg.get("parameter")))
        elif kind == "channelCreate":
            endpoint = str(msg.get("endpoint"))
            self.on_channel(msg.get("channelId"), endpoint, msg.get("creationParameter"))
        elif kind == "channelSend":
            self.on_channel_message(msg.get("channelId"), msg.get("message"))
        elif kind == "keepAlive":
            self.spawn(self.send({"type": "keepAliveAck"}))
        elif kind not in ("channelAck", "keepAliveAck"):
            self.spawn(self.send(p.warning(f"Anvyl does not handle {kind!r} messages")))
