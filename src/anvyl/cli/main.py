"""The `anvyl` root command: the groups, `serve`, and the entry point."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from anvyl import config
from anvyl.cli import container, host, run
from anvyl.cli.client import CONTEXT_SETTINGS, TOKEN_ENV

app = typer.Typer(
    name="anvyl",
    help="Run MLX LLMs as containerized, OpenAI-compatible model servers.",
    context_settings=CONTEXT_SETTINGS,  # -h is --host, as the spec has it
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(host.app, name="host")
app.add_typer(container.app, name="container")
app.command("run")(run.run)

# Groups that other parts of Anvyl provide; `anvyl` still works while one is absent.
for _module, _name in (
    ("anvyl.cli.model", "model"),
    ("anvyl.cli.image", "image"),
    ("anvyl.cli.cluster", "cluster"),
):
    try:
        _group = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
    else:
        app.add_typer(_group.app, name=_name)


def _version(value: bool) -> None:
    if value:
        from anvyl import __version__  # read from the installed metadata: only when asked

        typer.echo(f"anvyl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit"
    ),
) -> None:
    """Anvyl: containerized MLX model servers behind a gRPC control plane."""


@app.command()
def serve(
    host: str = typer.Option(
        config.DEFAULT_SERVER_HOST, "--host", "-h", help="Address to listen on"
    ),
    port: int = typer.Option(
        config.DEFAULT_SERVER_PORT, "--port", "-p", min=0, max=65535, help="Port (0: any free)"
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar=TOKEN_ENV,
        help="Access token clients must send; required off loopback",
        show_default=False,
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", envvar="ANVYL_TLS_CERT", help="PEM certificate: serve gRPC over TLS"
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", envvar="ANVYL_TLS_KEY", help="PEM private key of --tls-cert"
    ),
    label: list[str] = typer.Option(
        [],
        "--label",
        help="Extra label (k=v) on every container Anvyl creates; repeatable (env ANVYL_LABELS)",
    ),
    dashboard_host: str | None = typer.Option(
        None,
        "--dashboard-host",
        help="Address of the web dashboard [default: --host]",
        show_default=False,
    ),
    dashboard_port: int | None = typer.Option(
        None,
        "--dashboard-port",
        envvar="ANVYL_DASHBOARD_PORT",
        min=0,
        max=65535,
        help="Port of the web dashboard; 0 turns it off [default: 50052, skipped if taken]",
        show_default=False,
    ),
    gateway_host: str | None = typer.Option(
        None,
        "--gateway-host",
        help="Address of the OpenAI gateway [default: --host]",
        show_default=False,
    ),
    gateway_port: int | None = typer.Option(
        None,
        "--gateway-port",
        envvar="ANVYL_GATEWAY_PORT",
        min=0,
        max=65535,
        help="Port of the OpenAI gateway; 0 turns it off [default: 50080, skipped if taken]",
        show_default=False,
    ),
    ollama_port: int | None = typer.Option(
        None,
        "--ollama-port",
        envvar="ANVYL_OLLAMA_PORT",
        min=0,
        max=65535,
        help="A second gateway port, where Ollama's clients look; 0 turns it off"
        " [default: 11434, skipped if taken]",
        show_default=False,
    ),
    model_alias: list[str] = typer.Option(
        [],
        "--model-alias",
        help="NAME=MODEL: the gateway sends requests for NAME (a glob such as 'claude-*') to"
        " MODEL; repeatable",
    ),
    allow_origin: list[str] = typer.Option(
        [],
        "--allow-origin",
        envvar="ANVYL_ALLOW_ORIGINS",
        help="A web origin (scheme://host[:port], or *) whose pages may call the gateway from a"
        " browser, with CORS; pages on this machine always may; repeatable",
        show_default=False,
    ),
    runtime: str = typer.Option(
        "auto",
        "--runtime",
        envvar="ANVYL_RUNTIME",
        help="Default runtime of `model start`: container, process (no engine needed) or auto "
        "(container when an engine answers, else process)",
    ),
    autostart: bool = typer.Option(
        True,
        "--autostart/--no-autostart",
        envvar="ANVYL_AUTOSTART",
        help="Start a stopped model when a gateway request names it",
    ),
    keep_alive: str = typer.Option(
        "5m",
        "--keep-alive",
        envvar="ANVYL_KEEP_ALIVE",
        help="Idle time before a model started on demand unloads (10m, 90s, 0; -1: never)",
    ),
    load_timeout: float = typer.Option(
        120.0,
        "--load-timeout",
        min=1.0,
        max=3600.0,
        envvar="ANVYL_LOAD_TIMEOUT",
        help="Seconds a request waits for its model to load",
    ),
    max_memory: str = typer.Option(
        "",
        "--max-memory",
        envvar="ANVYL_MAX_MEMORY",
        help="Memory models may use per host (8g, 4096m) [default: total minus max(1 GiB, 10%)]",
        show_default=False,
    ),
    max_loaded: int = typer.Option(
        0,
        "--max-loaded",
        min=0,
        envvar="ANVYL_MAX_LOADED",
        help="Most models loaded per host; idle on-demand ones unload first [default: no limit]",
        show_default=False,
    ),
) -> None:
    """Run the gRPC control plane (health, reflection; state in $ANVYL_HOME)."""
    from anvyl.cli import output
    from anvyl.dashboard import DEFAULT_DASHBOARD_PORT, DashboardConfig
    from anvyl.errors import AnvylError
    from anvyl.server import AnvylServer, ServerConfig, serve

    def ready(server: AnvylServer) -> None:
        local = server.local_host
        typer.echo(
            f"anvyl serve listening on {server.address} "
            f"(host {local.id}, engine {local.address}, state {server.store.path})",
            err=True,
        )
        typer.echo(f"model runtime: {server.runtime} (--runtime; see `anvyl host list`)", err=True)
        if server.dashboard is not None:
            typer.echo(f"dashboard on {server.dashboard.url}", err=True)
        if server.gateway is not None:
            typer.echo(f"OpenAI gateway on {server.gateway.url}/v1", err=True)
        if server.gateway is not None and server.gateway.ollama_url is not None:
            typer.echo(f"Ollama API on {server.gateway.ollama_url}", err=True)

    import os

    labels: dict[str, str] = {}
    env_labels = [x for x in os.environ.get("ANVYL_LABELS", "").split(",") if x.strip()]
    for item in [*env_labels, *label]:
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            output.fail(f"bad label {item!r}: expected key=value", code=output.EXIT_USAGE)
        labels[key] = value
    dashboard = None
    if dashboard_port != 0:  # the default port is optional: taken, serve goes on without it
        dashboard = DashboardConfig(
            host=dashboard_host,
            port=DEFAULT_DASHBOARD_PORT if dashboard_port is None else dashboard_port,
            optional=dashboard_port is None,
        )
    from anvyl.gateway import DEFAULT_GATEWAY_PORT, DEFAULT_OLLAMA_PORT, GatewayConfig
    from anvyl.gateway.dialects import parse_aliases
    from anvyl.modelserver.browser import parse_origins

    try:
        aliases = parse_aliases(model_alias)
        origins = parse_origins(allow_origin)
    except ValueError as exc:
        output.fail(str(exc), code=output.EXIT_USAGE)
    gateway = None
    if gateway_port != 0:  # like the dashboard: the default port is skipped when taken
        gateway = GatewayConfig(
            host=gateway_host,
            port=DEFAULT_GATEWAY_PORT if gateway_port is None else gateway_port,
            optional=gateway_port is None,
            aliases=aliases,
            ollama_port=None if ollama_port == 0 else ollama_port or DEFAULT_OLLAMA_PORT,
            ollama_optional=ollama_port is None,
            allowed_origins=origins,
        )
    from anvyl.runtime.model_spec import parse_memory
    from anvyl.services.ondemand import DemandPolicy, parse_keep_alive

    try:
        demand = DemandPolicy(
            autostart=autostart,
            keep_alive_s=parse_keep_alive(keep_alive),
            load_timeout_s=load_timeout,
            max_memory=parse_memory(max_memory) if max_memory.strip() else 0,
            max_loaded=max_loaded,
        )
    except AnvylError as exc:
        output.fail(exc.message, code=output.EXIT_USAGE)
    cfg = ServerConfig(
        host=host,
        port=port,
        token=token,
        container_labels=labels,
        dashboard=dashboard,
        gateway=gateway,
        tls_cert=tls_cert,
        tls_key=tls_key,
        runtime=runtime,
        demand=demand,
    )
    try:
        code = serve(cfg, ready=ready)
    except AnvylError as exc:
        output.fail(exc.message)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    config.setup_logging()
    app()


if __name__ == "__main__":
    main()
