"""Browser safety of an HTTP port: the Host and Origin checks, and CORS for allowed origins.

A page on any site can send the user's browser to `localhost` with a `text/plain` POST (no CORS
preflight), open a websocket there, or rebind its own DNS name to 127.0.0.1. So every port a
model is served on (each model server's API and health ports, the gateway, its Ollama port)
applies one rule, here:

1. On loopback, the Host header must name this machine (DNS rebinding).
2. A request that carries an Origin must come from a page on this machine (`localhost`,
   127.0.0.0/8, ::1) or from an origin the operator allowed (`--allow-origin`, like Ollama's
   `OLLAMA_ORIGINS`); SDKs and command-line clients send no Origin and are not affected.
3. Such a page gets CORS answers: preflights (`OPTIONS` with `Access-Control-Request-Method`)
   are answered here, and every answer carries `Access-Control-Allow-Origin`.

The dashboard and the gateway import this module too, so the rule lives in one place; it sits
in `anvyl.modelserver` because the model-server image carries only that package's imports.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anvyl.modelserver.dialects.errors import error_payload

ANY_ORIGIN = "*"
ALLOWED_METHODS = b"GET, HEAD, POST, DELETE, OPTIONS"
# Asked for when a preflight names none: what the OpenAI, Anthropic and Ollama clients send.
DEFAULT_ALLOWED_HEADERS = b"authorization, content-type, x-api-key, anthropic-version"
PREFLIGHT_MAX_AGE_S = b"600"
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")
_SCHEMES = ("http", "https")


def is_loopback_name(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without brackets)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host name of a Host header or an origin, without port or brackets."""
    if "//" not in header:
        header = "//" + header
    try:
        return (urlsplit(header).hostname or "").lower()
    except ValueError:  # an unclosed bracket, a bad port: names no host
        return ""


def parse_origin(value: str) -> str:
    """An `--allow-origin` value as browsers send it (`scheme://host[:port]`), or `*`.

    Raises:
        ValueError: naming what is wrong (a path, a missing scheme, a wildcard in a name).
    """
    text = value.strip()
    if text == ANY_ORIGIN:
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme.lower() not in _SCHEMES
        or not parts.hostname
        or "*" in text
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(
            f"invalid origin {value!r}: give scheme://host[:port] as the browser shows it "
            "(e.g. http://localhost:5173 or https://app.example.com), or * for any origin"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme.lower() == "https" else 80
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme.lower()}://{host}{suffix}"


def parse_origins(values: Iterable[str]) -> frozenset[str]:
    """Several `--allow-origin` values (each may hold a comma-separated list)."""
    found = set()
    for value in values:
        found.update(parse_origin(item) for item in value.split(",") if item.strip())
    return frozenset(found)


@dataclass(frozen=True)
class BrowserPolicy:
    """Who may reach a port from a browser.

    Args:
        name: What the port is, for messages ("the gateway", "the model server").
        loopback: Whether the port is reachable on loopback only (then Host is checked).
        allowed: Origins that may use the port besides pages on this machine (`*`: any).
    """

    name: str
    loopback: bool
    allowed: frozenset[str] = frozenset()

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request must be refused (403), or None when it may go on."""
        if self.loopback and host is not None and not is_loopback_name(host_of(host)):
            return f"{self.name} answers on localhost only, not Host {host!r}"
        if origin is not None and not self.allows(origin):
            return (
                f"cross-origin browser requests are refused (Origin {origin!r}); allow the "
                "origin with --allow-origin"
            )
        return None

    def allows(self, origin: str) -> bool:
        """Whether a page at `origin` may use the port."""
        if is_loopback_name(host_of(origin)) or ANY_ORIGIN in self.allowed:
            return True
        try:
            return parse_origin(origin) in self.allowed
        except ValueError:
            return False


class BrowserGuard:
    """ASGI middleware applying a `BrowserPolicy` to HTTP requests and websockets."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, answer a preflight, or pass on (adding CORS headers to the answer)."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        refused = self.policy.refusal(headers.get("host"), origin)
        if refused is not None:
            if scope["type"] == "websocket":  # closed before the handshake: HTTP 403
                await receive()
                await send({"type": "websocket.close", "code": 1008, "reason": refused[:120]})
            else:
                await _forbidden(send, scope.get("path", ""), refused)
            return
        if origin is None or scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(send, cors, headers.get("access-control-request-headers", ""))
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"access-control-allow-origin", b"vary")
                ]
                message = {**message, "headers": [*kept, *cors]}
            await send(message)

        await self.app(scope, receive, with_cors)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


async def _preflight(send: Send, cors: list[tuple[bytes, bytes]], requested: str) -> None:
    """204 with what the browser asked to send (header names only, checked)."""
    wanted = requested.strip()
    allowed = wanted.encode("latin-1") if _HEADER_LIST.match(wanted) else DEFAULT_ALLOWED_HEADERS
    headers = [
        *cors,
        (b"vary", b"access-control-request-headers"),
        (b"access-control-allow-methods", ALLOWED_METHODS),
        (b"access-control-allow-headers", allowed),
        (b"access-control-max-age", PREFLIGHT_MAX_AGE_S),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _forbidden(send: Send, path: str, message: str) -> None:
    """403 in the error shape of the path's API."""
    body = json.dumps(
        error_payload(path, 403, message, "invalid_request_error", None, "forbidden_origin")
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
