"""Where the Anvyl server is: `--host/--port`, else `$ANVYL_ADDR`, else localhost:50051."""

from __future__ import annotations

import os
from dataclasses import dataclass

import typer

from anvyl import config

ADDR_ENV = "ANVYL_ADDR"


@dataclass(frozen=True)
class Target:
    """Where the Anvyl server is."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """`host:port` as users write it (IPv6 literals bracketed)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str) -> Target:
    """Parse `host:port`, `host`, `:port` or `[v6]:port` (missing parts take the defaults)."""
    value = value.strip()
    host, port = config.DEFAULT_SERVER_HOST, config.DEFAULT_SERVER_PORT
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise typer.BadParameter(f"bad {ADDR_ENV} {value!r}: unclosed '['")
        host, rest = value[1:end], value[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host_text, port_text = value.split(":")
        host = host_text or host
    else:
        host, port_text = value or host, ""
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise typer.BadParameter(f"bad {ADDR_ENV} {value!r}: the port must be 1-65535")
        port = int(port_text)
    return Target(host=host, port=port)


def resolve_target(host: str | None = None, port: int | None = None) -> Target:
    """Options win over `$ANVYL_ADDR`, which wins over localhost:50051."""
    base = parse_address(os.environ.get(ADDR_ENV, ""))
    return Target(host=host or base.host, port=port or base.port)
