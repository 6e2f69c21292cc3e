"""Browser safety of the gateway: what a web page in the user's browser may not do.

A page on any site can send the user's browser to `localhost` with a `text/plain` POST (no CORS
preflight), or rebind its own DNS name to 127.0.0.1. So, as the dashboard does:

1. On loopback, the Host header must name this machine (DNS rebinding).
2. A request that carries an Origin must come from a page on this machine (`localhost`,
   127.0.0.0/8, ::1); SDKs and command-line clients send no Origin and are not affected.
"""

from __future__ import annotations

from collections.abc import Iterable

from anvyl.dashboard.auth import host_of, is_loopback_name


def refusal(headers: Iterable[tuple[bytes, bytes]], *, loopback: bool) -> str | None:
    """Why a request must be refused (403), or None when it may go on."""
    host = origin = None
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
    if loopback and host is not None and not is_loopback_name(host_of(host)):
        return f"the gateway answers on localhost only, not Host {host!r}"
    if origin is not None and not is_loopback_name(host_of(origin)):
        return f"cross-origin browser requests are refused (Origin {origin!r})"
    return None
