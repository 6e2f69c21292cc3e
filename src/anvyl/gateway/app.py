"""The gateway's ASGI app: route each OpenAI request by its `model` to a healthy replica.

Raw ASGI (no framework) and one pooled `httpx.AsyncClient`: the proxy adds well under a
millisecond to a request. A replica that cannot be connected to (or that dies or is marked down
before answering) is marked down and the request goes to another one; once the first byte of
an answer has been sent on, the answer is passed through as it comes (streams unbuffered).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from starlette.websockets import WebSocket

from anvyl.catalog import ModelInfo
from anvyl.gateway import dialects, lmstudio, protocol
from anvyl.gateway.ondemand import ClientGone, Loader, Refusal, requested_keep_alive
from anvyl.gateway.response_owners import RESPONSE_ID_HEADER, Pinned, ResponseOwners, pin
from anvyl.gateway.routing import Replica, RoutingTable

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024
RETRY_AFTER_S = 2
ROUTED_PREFIXES = ("/v1/", "/api/")  # OpenAI, Anthropic, LM Studio REST and Ollama
GREETING_PATH = "/lmstudio-greeting"
# Not forwarded either way (hop-by-hop), or set by the gateway itself.
HOP_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Origin too: the gateway judged it (see anvyl.modelserver.browser); the replica sees the gateway.
DROPPED_REQUEST_HEADERS = HOP_HEADERS | {
    b"host", b"authorization", b"x-api-key", b"content-length", b"origin", b"referer",
}  # fmt: skip
# Failures that mean the replica never answered: safe to send the request to another one.
RETRIABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


class Gateway:
    """The ASGI callable: auth, `/v1/models`, and the proxy."""

    def __init__(
        self,
        table: RoutingTable,
        client: httpx.AsyncClient,
        *,
        token: str | None = None,
        aliases: tuple[tuple[str, str], ...] = (),
        loader: Loader | None = None,
        startable: Callable[[], list[ModelInfo]] = list,
    ) -> None:
        self.startable = startable  # models a request may start (empty: autostart off)
        self.loader = loader  # loads stopped models on the first request (None: never)
        self.table = table
        self.aliases = aliases  # (glob, model id): names such as claude-* mapped to a model
        self.client = client
        self.token = token or None
        self.started = time.time()
        self.owners = ResponseOwners()  # which replica stores each OpenAI Response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request or LM Studio websocket (other ASGI scopes are ignored)."""
        if scope["type"] == "websocket":
            await lmstudio.serve_socket(self, WebSocket(scope, receive, send))
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        dialects.CURRENT_PATH.set(path)  # errors come in the path's dialect
        if path == "/health":
            await _respond(send, 200, b'{"status":"ok"}')
            return
        if path == GREETING_PATH:  # the LM Studio SDK's probe before it opens its websockets
            await _respond(send, 200, b'{"lmstudio":true}')
            return
        if dialects.is_local(path, method):
            if path not in dialects.OPEN and not self._authorized(scope, self.all_client_keys()):
                await _unauthorized(send)
                return
            expiries: dict[str, float] = {}
            if path == "/api/ps" and self.loader is not None:
                expiries = await asyncio.to_thread(self.loader.demand.expiries)
            await dialects.answer_locally(
                send, path, self.table, self.client, self.startable(), expiries, self.owners
            )
            return
        refused = dialects.refusal(path, method)
        if refused is not None:
            if not self._authorized(scope, self.all_client_keys()):
                await _unauthorized(send)
            else:
                await _error(send, 400, refused, code="unsupported_feature")
            return
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                await _error(send, 405, f"{method} is not allowed on {path}")
            elif not self._authorized(scope, self.all_client_keys()):
                await _unauthorized(send)
            else:
                await self._models(send, path.removeprefix("/v1/models").strip("/"))
            return
        if not path.startswith(ROUTED_PREFIXES):
            await _error(send, 404, f"no route for {path}; the gateway serves the OpenAI,"
                         " Anthropic, Ollama and LM Studio APIs")  # fmt: skip
            return
        body = await _read_body(receive)
        if body is None:
            await _error(send, 413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
            return
        model, previous = protocol.requested(body)
        if model is None:
            await _error(
                send, 400, "the request names no model: put its id in `model`", param="model"
            )
            return
        routed = dialects.routed_model(path, model, self.table, self.aliases)
        if routed != model:  # the replica knows only its own id
            body = dialects.with_model(body, routed)
        model = routed
        keys = {r.target.client_key for r in self.table.models().get(model, ())}
        if not self._authorized(scope, keys - {""}):
            await _unauthorized(send)
            return
        previous = previous if path == "/v1/responses" else None
        await self._proxy(scope, receive, send, body, model, previous)

    # -- local answers ---------------------------------------------------------------------

    async def _models(self, send: Send, model_id: str) -> None:
        entries = []
        running = self.table.models()
        for model, replicas in sorted(running.items()):
            created = min((r.target.created_at for r in replicas), default=0.0) or self.started
            healthy = sum(1 for r in replicas if r.healthy)
            tool_format = next((r.target.tool_format for r in replicas if r.target.tool_format), "")
            entries.append(
                protocol.model_entry(model, created, len(replicas), healthy, tool_format)
            )
        for info in self.startable():
            if info.id not in running:
                entries.append(protocol.startable_entry(info))
        if not model_id:
            await _respond(send, 200, protocol.models_body(entries))
            return
        match = next((e for e in entries if e["id"] == model_id), None)
        if match is None:
            await _model_not_found(send, model_id, self.table)
            return
        await _respond(send, 200, _json(match))

    def all_client_keys(self) -> set[str]:
        """Every model's own key that clients may send."""
        return {r.target.client_key for r in self.table.replicas() if r.target.client_key}

    def accepts(self, given: str | None, client_keys: set[str]) -> bool:
        """The server's token, or the model's own API key, when either is required."""
        accepted = client_keys - {""}
        if self.token:
            accepted.add(self.token)
        if not accepted:
            return True
        return given is not None and any(
            hmac.compare_digest(given.encode(), key.encode()) for key in accepted
        )

    def _authorized(self, scope: Scope, client_keys: set[str]) -> bool:
        return self.accepts(_bearer(scope), client_keys)

    # -- the proxy -------------------------------------------------------------------------

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        model: str,
        previous: str | None = None,
    ) -> None:
        disconnect = _Disconnect(receive)
        try:
            await self._route(scope, send, body, model, disconnect, previous)
        finally:
            disconnect.cancel()

    async def _route(
        self,
        scope: Scope,
        send: Send,
        body: bytes,
        model: str,
        disconnect: _Disconnect,
        previous: str | None = None,
    ) -> None:
        """Send the request to a replica of `model` (to the one storing `previous`, the
        `previous_response_id` of a Responses request, when the gateway knows it)."""
        keep_alive, running_too = None, False
        if self.loader is not None:
            try:
                keep_alive, running_too = requested_keep_alive(scope["path"], body)
            except ValueError as exc:
                await _error(send, 400, str(exc), param="keep_alive")
                return
            if keep_alive == 0 and dialects.is_unload(scope["path"], body):  # Ollama's unload
                await asyncio.to_thread(self.loader.unload, model)
                await _respond(send, 200, dialects.unloaded_body(model))
                return
        tried: list[Replica] = []
        last_error = ""
        loads = 0
        while True:
            counted = False
            if self.loader is not None and loads < 2:  # the second: it unloaded under us
                loads += 1
                try:
                    outcome = await self.loader.acquire(
                        model, disconnect.get, keep_alive, running_too=running_too
                    )
                except ClientGone:
                    return  # nobody to answer
                if isinstance(outcome, Refusal):
                    await _refuse(send, outcome)
                    return
                counted = outcome
                tried = []
            pinned = None if previous is None else pin(
                self.owners, self.table, model, previous, RETRY_AFTER_S)  # fmt: skip
            try:
                if pinned is not None and pinned.replica is None:
                    await _refuse_pinned(send, pinned)
                    return
                done, last_error = await self._try_replicas(
                    scope, send, body, model, disconnect, tried, last_error,
                    pinned.replica if pinned is not None else None,
                )  # fmt: skip
            finally:
                if counted and self.loader is not None:
                    self.loader.release(model)
            if done:
                return
            if self.loader is None or loads >= 2 or not counted:
                break
        pinned = None if previous is None else pin(
            self.owners, self.table, model, previous, RETRY_AFTER_S)  # fmt: skip
        if pinned is not None and pinned.replica is None:  # its replica failed just now
            await _refuse_pinned(send, pinned)
        elif not self.table.known(model):
            await _model_not_found(send, model, self.table)
        else:
            detail = f" (last error: {last_error})" if last_error else ""
            await _unavailable(send, model, detail)

    async def _try_replicas(
        self,
        scope: Scope,
        send: Send,
        body: bytes,
        model: str,
        disconnect: _Disconnect,
        tried: list[Replica],
        last_error: str,
        only: Replica | None = None,
    ) -> tuple[bool, str]:
        """Send the request to healthy replicas in turn (`only` that one, when given);
        (answered, last error)."""
        while True:
            if only is None:
                replica = self.table.pick(model, tried)
            else:
                replica = only if only.healthy and only not in tried else None
            if replica is None:
                return False, last_error
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await self._open(scope, body, replica)
                if response is None:
                    last_error = f"{replica.target.deployment or replica.target.key} failed"
                    continue
                if scope["path"] == "/v1/responses" and response.status_code == 200:
                    stored = response.headers.get(RESPONSE_ID_HEADER)
                    if stored:  # that replica keeps it: continuations go there
                        self.owners.record(stored, replica.target.key)
                try:
                    await _pass_through(disconnect, send, response, replica)
                finally:
                    await response.aclose()
                return True, last_error
            finally:
                replica.outstanding -= 1

    async def _open(self, scope: Scope, body: bytes, replica: Replica) -> httpx.Response | None:
        """Send the request to `replica`; None when it failed before answering (marked down)."""
        target = replica.target
        headers = [(k, v) for k, v in scope["headers"] if k not in DROPPED_REQUEST_HEADERS]
        if target.upstream_key:
            headers.append((b"authorization", f"Bearer {target.upstream_key}".encode()))
        path = scope.get("raw_path") or scope["path"].encode()
        url = target.base_url + path.decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        task = asyncio.current_task()
        assert task is not None
        replica.waiting.add(task)  # `mark_down` cancels it: the replica will not answer
        try:
            return await self.client.send(request, stream=True)
        except asyncio.CancelledError:
            if task not in replica.given_up:
                raise  # the server is shutting down
            replica.given_up.discard(task)
            task.uncancel()
            log.info("replica %s went down before answering; retrying", target.key)
            return None
        except RETRIABLE as exc:
            log.info("replica %s failed (%s); marking it down", target.key, type(exc).__name__)
            replica.waiting.discard(task)  # marking it down must not cancel this very request
            self.table.set_health(target.key, False)
            return None
        finally:
            replica.waiting.discard(task)


class _Disconnect:
    """The client's disconnect, watched only once something needs to know (a wait, a stream):
    one `receive()` in flight at a time, shared by the load wait and the stream."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._future: asyncio.Future[Message] | None = None

    def get(self) -> asyncio.Future[Message]:
        if self._future is None:
            self._future = asyncio.ensure_future(self._receive())
        return self._future

    def cancel(self) -> None:
        if self._future is not None:
            self._future.cancel()


async def _pass_through(
    disconnect: _Disconnect, send: Send, response: httpx.Response, replica: Replica
) -> None:
    """Copy status, headers and body chunks as they arrive; stop a stream if the client leaves."""
    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_HEADERS]
    deployment = replica.target.deployment or replica.target.key
    headers.append((b"x-anvyl-deployment", deployment.encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    kind = response.headers.get("content-type", "")
    streaming = kind.startswith(("text/event-stream", "application/x-ndjson"))
    # Only a stream can run long enough for a client to leave: watch for it there.
    disconnected = disconnect.get() if streaming else None
    try:
        async for chunk in response.aiter_raw():
            if disconnected is not None and disconnected.done():
                return  # the client left: closing the upstream stream frees the model's slot
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as exc:
        # Too late to retry: the client has part of the answer. End it; the replica is
        # probed again and marked down if it is really gone.
        log.warning("replica %s failed mid-answer: %s", replica.target.key, exc)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it is larger than MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
        if name == b"x-api-key":  # what Anthropic's clients send
            return value.decode("latin-1").strip()
    return None


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(
    send: Send,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await _respond(
        send, status, dialects.error_body(message, status, code=code, param=param), extra
    )


async def _unauthorized(send: Send) -> None:
    await _error(
        send,
        401,
        "a valid API key is required: send `Authorization: Bearer <key>` with the server's "
        "access token or the model's API key",
        code="invalid_api_key",
        extra=[(b"www-authenticate", b"Bearer")],
    )


async def _model_not_found(send: Send, model: str, table: RoutingTable) -> None:
    running = ", ".join(sorted(table.models())) or "none"
    await _error(
        send,
        404,
        f"The model `{model}` does not exist or is not running (running models: {running})",
        code="model_not_found",
        param="model",
    )


async def _refuse(send: Send, refusal: Refusal) -> None:
    extra = [(b"retry-after", str(refusal.retry_after).encode())] if refusal.retry_after else []
    await _error(send, refusal.status, refusal.message, code=refusal.code, extra=extra)


async def _refuse_pinned(send: Send, pinned: Pinned) -> None:
    extra = [(b"retry-after", str(pinned.retry_after).encode())] if pinned.retry_after else []
    await _error(send, pinned.status, pinned.message, param="previous_response_id", extra=extra)


async def _unavailable(send: Send, model: str, detail: str) -> None:
    await _error(
        send,
        503,
        f"no healthy replica of {model} right now; retry shortly{detail}",
        code="no_healthy_replica",
        extra=[(b"retry-after", str(RETRY_AFTER_S).encode())],
    )
