"""The ASGI apps: the API app (every route) and the health app (only `/health`).

The API app wraps its routes in one middleware that checks the API key (everything but
`/health`) and counts requests by endpoint and status, and in exception handlers that render
every error, FastAPI's validation errors included, in OpenAI's shape.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anvyl.modelserver.browser import BrowserGuard
from anvyl.modelserver.dialects.errors import error_payload
from anvyl.modelserver.dialects.routes import DIALECT_ENDPOINTS
from anvyl.modelserver.dialects.routes import router as dialects_router
from anvyl.modelserver.errors import APIError, Unauthorized
from anvyl.modelserver.lmstudio.routes import GREETING_PATH
from anvyl.modelserver.lmstudio.routes import router as lmstudio_router
from anvyl.modelserver.routes import api_router, health_router, validation_error
from anvyl.modelserver.state import ServerState
from anvyl.modelserver.streaming import json_bytes

log = logging.getLogger("anvyl.modelserver")

# The LM Studio SDK probes its greeting before its hello; Ollama clients probe "/".
OPEN_PATHS = frozenset({"/health", GREETING_PATH, "/"})
KNOWN_ENDPOINTS = frozenset(
    {
        "/health",
        "/metrics",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/api/v0/models",
        "/api/v0/chat/completions",
        "/api/v0/completions",
        *DIALECT_ENDPOINTS,
    }
)


def create_app(state: ServerState) -> FastAPI:
    """The API app over `state`."""
    app = FastAPI(title="Anvyl model server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.anvyl = state
    app.include_router(health_router)
    app.include_router(api_router)
    app.include_router(lmstudio_router)
    app.include_router(dialects_router)
    _install_error_handlers(app)
    app.add_middleware(GateMiddleware, state=state)
    app.add_middleware(BrowserGuard, policy=state.config.browser_policy())  # outermost
    return app


def create_health_app(state: ServerState) -> FastAPI:
    """The health-port app: `/health` only, never behind the key."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.anvyl = state
    app.include_router(health_router)
    _install_error_handlers(app)
    app.add_middleware(BrowserGuard, policy=state.config.browser_policy())
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Render every error in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        body = _body(request.url.path, exc)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc.errors())
        return JSONResponse(_body(request.url.path, err), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (
            f"Unknown route: {request.method} {request.url.path}"
            if exc.status_code == 404
            else str(exc.detail)
        )
        body = error_payload(
            request.url.path, exc.status_code, message, "invalid_request_error", None,
            exc.status_code,
        )  # fmt: skip
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
        body = error_payload(request.url.path, 500, message, "server_error")
        return JSONResponse(body, status_code=500)


def _body(path: str, exc: APIError) -> dict[str, Any]:
    """`exc` in the error shape of `path`'s dialect."""
    return error_payload(path, exc.status, exc.message, exc.type, exc.param, exc.code)


class GateMiddleware:
    """API-key check and request counting, as plain ASGI (streaming responses stay untouched)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        key = state.config.api_key
        self._expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse unauthenticated requests; count every answered one."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        endpoint = _endpoint_label(path)
        if self._expected is not None and path not in OPEN_PATHS and not self._authorized(scope):
            err = Unauthorized(
                "Missing or incorrect API key: send it as 'Authorization: Bearer <key>'"
                " or 'x-api-key: <key>'."
            )
            await _send_json(send, err.status, _body(path, err), {"WWW-Authenticate": "Bearer"})
            self._count(endpoint, err.status)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self._count(endpoint, status)

    def _authorized(self, scope: Scope) -> bool:
        """Constant-time comparison of the Authorization (or x-api-key) header with the key."""
        assert self._expected is not None
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
            if name == b"x-api-key":  # what Anthropic's clients send
                given = b"Bearer " + value
        return hmac.compare_digest(given, self._expected)

    def _count(self, endpoint: str, status: int) -> None:
        """Count one answered request."""
        self.state.engine.metrics.requests.labels(endpoint, str(status)).inc()


def _endpoint_label(path: str) -> str:
    """A bounded label for `path` (unknown paths share one)."""
    if path in KNOWN_ENDPOINTS:
        return path
    for prefix in ("/v1/models/", "/api/v0/models/"):
        if path.startswith(prefix):
            return prefix + "{id}"
    return "other"


async def _send_json(send: Send, status: int, body: Any, headers: dict[str, str]) -> None:
    """Answer a request directly from the middleware."""
    payload = json_bytes(body)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
