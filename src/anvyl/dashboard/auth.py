"""Who may use the dashboard: the gRPC access token (bearer or login cookie), same-origin writes.

Checks, in order, as one ASGI middleware:

1. On loopback, the Host header must name this machine (a page on another site that rebinds
   its DNS name to 127.0.0.1 cannot reach the dashboard).
2. A write (POST, PUT, DELETE) that carries an Origin must come from the dashboard's own origin.
3. With a token configured, every request but the login page and static files needs
   `Authorization: Bearer <token>` or the session cookie the login form sets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from anvyl.modelserver.browser import host_of, is_loopback_name

SESSION_COOKIE = "anvyl_dashboard"
OPEN_PREFIXES = ("/static/", "/login", "/favicon.ico")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_value(token: str) -> str:
    """The cookie value standing for `token` (derived, so the token never sits in a cookie)."""
    return hmac.new(token.encode(), b"anvyl-dashboard-session-v1", hashlib.sha256).hexdigest()


def token_matches(token: str, given: str) -> bool:
    """Constant-time comparison of a submitted token."""
    return hmac.compare_digest(token.encode(), given.encode())


def safe_next(path: str) -> str:
    """A local path to go back to after logging in (never another site)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


class Guard:
    """The ASGI middleware that applies the checks in the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token or None
        self.loopback = loopback
        self._session = session_value(token) if token else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, redirect to the login page, or pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        host = headers.get("host", "")
        if self.loopback and not is_loopback_name(host_of(host)):
            await _json(send, 400, f"the dashboard answers on localhost only, not {host!r}")
            return
        origin = headers.get("origin")
        if scope["method"] in UNSAFE_METHODS and origin and _netloc(origin) != host.lower():
            await _json(send, 403, "cross-site request refused")
            return
        if self.token is None or path.startswith(OPEN_PREFIXES) or self.authorized(headers):
            await self.app(scope, receive, send)
            return
        if path.startswith("/api/"):
            await _json(
                send, 401, "an access token is required: log in or send Authorization: Bearer"
            )
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        await _redirect(send, f"/login?next={quote(target, safe='')}")

    def authorized(self, headers: dict[str, str]) -> bool:
        """True when the request carries the token or the session cookie."""
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(self.token, given.strip()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and hmac.compare_digest(value, self._session):
                return True
        return False


def _netloc(origin: str) -> str:
    """`host:port` of an origin, as a browser writes the Host header for it."""
    return urlsplit(origin).netloc.lower()


async def _json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "code": str(status), "status": status}})
    extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
