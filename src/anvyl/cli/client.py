"""Reaching the control plane: address options, the channel, the token and the stubs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

import typer

from anvyl import config

if TYPE_CHECKING:
    import grpc

    from anvyl.api import anvyl_pb2_grpc as rpc

ADDR_ENV = "ANVYL_ADDR"
TOKEN_ENV = "ANVYL_TOKEN"
# A PEM file of the CA (or the server's own certificate) to trust: the channel then uses TLS.
TLS_CA_ENV = "ANVYL_TLS_CA"
CALL_TIMEOUT_S = 60.0
CONTEXT_SETTINGS = {"help_option_names": ["--help"]}

# The spec names both spellings: --host/-h and --port/-p (model list), --anvyl-host/--anvyl-port
# (model start/ps/stop, where --port is the model's port). Container and host commands take both.
HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        "-h",
        "--anvyl-host",
        help=f"Anvyl server host [default: from ${ADDR_ENV}, else {config.DEFAULT_SERVER_HOST}]",
        show_default=False,
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        "-p",
        "--anvyl-port",
        help=f"Anvyl server port [default: from ${ADDR_ENV}, else {config.DEFAULT_SERVER_PORT}]",
        show_default=False,
        min=1,
        max=65535,
    ),
]
AnvylHostOption = Annotated[
    str | None,
    typer.Option("--anvyl-host", help="Anvyl server host", show_default=False),
]
AnvylPortOption = Annotated[
    int | None,
    typer.Option("--anvyl-port", help="Anvyl server port", show_default=False, min=1, max=65535),
]


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


class Client:
    """A channel to the Anvyl server and its stubs; call metadata carries the token."""

    def __init__(self, target: Target, *, token: str | None = None) -> None:
        self.target = target
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None

    @cached_property
    def channel(self) -> grpc.Channel:
        """The (lazily connected) channel."""
        import grpc

        ca = os.environ.get(TLS_CA_ENV)
        if ca:
            with open(ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            return grpc.secure_channel(self.target.address, credentials)
        return grpc.insecure_channel(self.target.address)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """`authorization: Bearer <token>` when a token is set."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @cached_property
    def hosts(self) -> rpc.HostServiceStub:
        """anvyl.v1.HostService."""
        from anvyl.api import anvyl_pb2_grpc as rpc

        return rpc.HostServiceStub(self.channel)

    @cached_property
    def containers(self) -> rpc.ContainerServiceStub:
        """anvyl.v1.ContainerService."""
        from anvyl.api import anvyl_pb2_grpc as rpc

        return rpc.ContainerServiceStub(self.channel)

    @cached_property
    def models(self) -> rpc.ModelServiceStub:
        """anvyl.v1.ModelService."""
        from anvyl.api import anvyl_pb2_grpc as rpc

        return rpc.ModelServiceStub(self.channel)

    @cached_property
    def cluster(self) -> rpc.ClusterServiceStub:
        """anvyl.v1.ClusterService."""
        from anvyl.api import anvyl_pb2_grpc as rpc

        return rpc.ClusterServiceStub(self.channel)

    def close(self) -> None:
        """Close the channel if it was opened."""
        if "channel" in self.__dict__:
            self.channel.close()


def connect(host: str | None = None, port: int | None = None) -> Client:
    """A client for the server the options (or `$ANVYL_ADDR`) point at."""
    return Client(resolve_target(host, port))
