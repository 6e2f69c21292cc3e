"""Reaching the control plane: address options, the channel, the token, the stubs and calls."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any

import typer

from anvyl import config
from anvyl.cli.address import ADDR_ENV, Target, resolve_target

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import grpc
    from google.protobuf.message import Message

    from anvyl.api import anvyl_pb2_grpc as rpc

TOKEN_ENV = "ANVYL_TOKEN"
# A PEM file of the CA (or the server's own certificate) to trust: the channel then uses TLS.
TLS_CA_ENV = "ANVYL_TLS_CA"
CALL_TIMEOUT_S = 60.0
STUBS = ("hosts", "containers", "models", "cluster")  # the services `Client.call` reaches
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


class Client:
    """A channel to the Anvyl server and its stubs; call metadata carries the token.

    Example:
        reply = connect(host, port).call("models.ListDeployments", pb.ListDeploymentsRequest())
    """

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

    def call(self, rpc: str, request: Message, *, timeout: float | None = CALL_TIMEOUT_S) -> Any:
        """Make one unary call and return its reply; a failure prints one line and exits.

        Args:
            rpc: `service.Method`, the service being one of this client's stubs
                (`hosts`, `containers`, `models`, `cluster`), e.g. `"models.ListDeployments"`.
            request: The request message.
            timeout: The call's deadline in seconds (None: none).
        """
        with self.errors():
            return self.invoke(rpc, request, timeout=timeout)

    def invoke(self, rpc: str, request: Message, *, timeout: float | None = None) -> Any:
        """Start a call (a stream's iterator, or a unary reply) with the token's metadata.

        Failures are left to the caller: use it inside `with client.errors():`, around the
        iteration of a stream or with a spinner that must stop before the error line.
        """
        service, _, method = rpc.partition(".")
        if service not in STUBS:
            raise ValueError(f"unknown service {service!r} in {rpc!r}")
        stub = getattr(self, service)
        return getattr(stub, method)(request, timeout=timeout, metadata=self.metadata)

    def errors(self) -> AbstractContextManager[None]:
        """gRPC failures and Ctrl-C inside the block become one line and an exit code."""
        from anvyl.cli.output import cli_errors

        return cli_errors(self.target)


def connect(host: str | None = None, port: int | None = None) -> Client:
    """A client for the server the options (or `$ANVYL_ADDR`) point at."""
    return Client(resolve_target(host, port))
