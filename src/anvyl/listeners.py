"""Listening sockets for the HTTP doors `anvyl serve` opens beside gRPC (dashboard, gateway)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anvyl.errors import AlreadyExists, InvalidArgument


@dataclass(frozen=True)
class TLSFiles:
    """A PEM certificate and its private key (`anvyl serve --tls-cert/--tls-key`)."""

    cert: Path
    key: Path

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """uvicorn.Config's TLS arguments."""
        return {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}


def bind_socket(
    host: str, port: int, *, what: str, option: str, backlog: int = 1024
) -> socket.socket:
    """A non-blocking listening TCP socket on `host:port`; AlreadyExists when the port is taken.

    Args:
        host: Address (IPv4, IPv6 or a name) to listen on.
        port: TCP port; 0 picks a free one.
        what: What listens, for messages ("the dashboard").
        option: The command-line option that moves it ("--dashboard-port").
        backlog: Connections the kernel queues before `accept`.
    """
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidArgument(f"cannot resolve the host {host!r} for {what}: {exc}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, Nagle and delayed ACKs add ~40 ms per answer.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise AlreadyExists(
            f"{what} cannot listen on {host}:{port} ({exc.strerror}): is the port in use? "
            f"Choose another with {option}, or 0 to turn it off"
        ) from exc
    sock.setblocking(False)
    return sock


def socket_url(host: str, sock: socket.socket, *, tls: bool = False) -> str:
    """`http(s)://host:port` of a bound socket, with the real address when bound to all."""
    bound_host, port = sock.getsockname()[:2]
    shown = host if host not in ("0.0.0.0", "::", "") else bound_host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"{'https' if tls else 'http'}://{shown}:{port}"
