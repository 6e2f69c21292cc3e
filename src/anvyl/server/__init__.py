"""The gRPC control plane (`anvyl serve`)."""

from anvyl.server.app import AnvylServer, ServerConfig, is_loopback, serve

__all__ = ["AnvylServer", "ServerConfig", "is_loopback", "serve"]
