"""Whether a TCP port is free on this machine, and who holds it when it is not."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def local_port_holder(bind: str, port: int) -> str | None:
    """None when `bind:port` is free here; else " (by <process>)" or "" when unknown."""
    import socket

    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: a port whose last connections wait in TIME_WAIT is
        # free to listen on; only a listener (or an exclusive bind) holds it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
            return None
        except OSError:
            pass
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f" (by {psutil.Process(conn.pid).name()}, pid {conn.pid})"
    except Exception:  # psutil may lack permission; the port is taken either way
        log.debug("could not tell who holds port %s", port, exc_info=True)
    return ""


def free_local_port(bind: str = "127.0.0.1") -> int:
    """A TCP port free on `bind` now, picked by the kernel (ephemeral range)."""
    import socket

    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])
