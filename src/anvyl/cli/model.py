"""`anvyl model`: list, import, remove, start, ps and stop MLX models (through the server)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from anvyl import config
from anvyl.cli import output
from anvyl.cli.client import (
    CALL_TIMEOUT_S,
    CONTEXT_SETTINGS,
    AnvylHostOption,
    AnvylPortOption,
    HostOption,
    PortOption,
    connect,
)
from anvyl.cli.cluster import print_replicas, replica_json
from anvyl.cli.model_pull import pull
from anvyl.cli.output import OutputFormat, OutputOption

if TYPE_CHECKING:
    from anvyl.api import anvyl_pb2 as pb

app = typer.Typer(
    help="MLX models served as OpenAI-compatible containers.", context_settings=CONTEXT_SETTINGS
)
app.command("pull")(pull)

PS_COLUMNS = ("NAME", "MODEL", "RUNTIME", "CONTAINER", "HOST", "URL", "STATE", "UPTIME")
PS_COLUMNS += ("MEMORY", "TOK/S", "UNLOADS")
START_PHASES = {
    "resolving": "Resolving the model",
    "image": "Preparing the model-server image",
    "copying": "Putting the model on the nodes",
    "creating": "Creating the container",
    "loading": "Loading weights",
    "ready": "Ready",
}


def model_json(m: pb.Model) -> dict[str, Any]:
    """One available model, in `-o json`'s stable schema."""
    return {
        "id": m.id,
        "architecture": m.architecture,
        "parameters": m.parameters,
        "quantization": m.quantization,
        "size_bytes": m.size_bytes,
        "context_length": m.context_length or None,
        "memory_bytes": m.memory_bytes,
        "tool_format": m.tool_format or None,
        "source": m.source,
        "origin": m.origin,
        "path": m.path,
        "running": m.running,
    }


def deployment_json(d: pb.Deployment) -> dict[str, Any]:
    """One deployment, in `-o json`'s stable schema."""
    return {
        "id": d.id,
        "name": d.name,
        "model_id": d.model_id,
        "container_id": d.container_id,
        "host_id": d.host_id,
        "runtime": d.runtime or "container",
        "on_demand": d.on_demand,
        "keep_alive_seconds": d.keep_alive_seconds if d.keep_alive_seconds >= 0 else None,
        "unload_at": d.unload_at or None,
        "url": d.url,
        "state": d.state,
        "state_reason": d.state_reason,
        "port": d.port,
        "bind": d.bind,
        "uptime_seconds": round(d.uptime_seconds, 1),
        "memory_used_bytes": d.memory_used_bytes,
        "memory_limit_bytes": d.memory_limit_bytes or None,
        "tokens_per_second": round(d.tokens_per_second, 2),
        "requests_total": d.requests_total,
        "created_at": output.iso_time(d.created_at),
        "replicas": [replica_json(r) for r in d.replicas],
    }


def _parameters_text(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}M"
    return str(n) if n else "-"


def _uptime_text(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _state_text(d: pb.Deployment) -> str:
    colour = {"ready": "green", "starting": "yellow"}.get(d.state, "red")
    text = f"[{colour}]{d.state}[/{colour}]"
    return f"{text} ({d.state_reason})" if d.state_reason and d.state != "ready" else text


@app.command("list")
def list_models(
    out: OutputOption = OutputFormat.table,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """List MLX models available to start (imported, LM Studio, Hugging Face cache)."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call("models.ListModels", pb.ListModelsRequest())
    output.print_listing(
        out,
        "models",
        reply.models,
        model_json,
        ["MODEL ID", "ARCH", "PARAMS", "QUANT", "SIZE", "TOOLS", "SOURCE", "RUNNING"],
        lambda m: [
            m.id,
            m.architecture,
            _parameters_text(m.parameters),
            m.quantization,
            output.human_bytes(m.size_bytes),
            m.tool_format or "-",
            f"{m.source} ({m.origin})" if m.origin else m.source,
            str(m.running) if m.running else "-",
        ],
    )


@app.command("import")
def import_model(
    path: str = typer.Argument(
        "",
        help="A .gguf file or an MLX model directory on the server's machine",
        show_default=False,
    ),
    name: str = typer.Option("", "--name", "-n", help="Model id (default: from the file name)"),
    bundled: str = typer.Option(
        "", "--bundled", help="Import a model bundled with Anvyl instead (smollm2)"
    ),
    link: bool = typer.Option(False, "--link", help="Link an MLX directory instead of copying"),
    host: AnvylHostOption = None,
    port: AnvylPortOption = None,
) -> None:
    """Import a GGUF file (converted to MLX) or an MLX directory into ANVYL_HOME/models."""
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from anvyl.api import anvyl_pb2 as pb

    if bool(path) == bool(bundled):
        output.fail("give either a PATH or --bundled NAME", code=output.EXIT_USAGE)
    if path and not Path(path).is_absolute():
        path = str(Path(path).resolve())  # the server resolves paths on its own machine
    client = connect(host, port)
    model = None
    with (
        client.errors(),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=output.console(stderr=True),
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("importing", total=1.0)
        for event in client.invoke(
            "models.ImportModel",
            pb.ImportModelRequest(path=path, name=name, bundled=bundled, link=link),
        ):
            if event.HasField("model"):
                model = event.model
            else:
                bar.update(task, completed=event.fraction, description=event.step)
    if model is not None:
        output.console().print(
            f"Imported [bold]{model.id}[/bold] ({model.architecture}, {model.quantization}, "
            f"{output.human_bytes(model.size_bytes)}) — start it with "
            f"`anvyl model start {model.id}`"
        )


@app.command("rm")
def remove_model(
    model_id: str = typer.Argument(..., help="Id of an imported model"),
    host: AnvylHostOption = None,
    port: AnvylPortOption = None,
) -> None:
    """Remove an imported model (refused while a deployment uses it)."""
    from anvyl.api import anvyl_pb2 as pb

    model = connect(host, port).call("models.RemoveModel", pb.RemoveModelRequest(model_id=model_id))
    output.console().print(f"Removed {model.id} ({output.human_bytes(model.size_bytes)} freed)")


@app.command("start")
def start(
    model_id: str = typer.Argument(..., help="Model id to start (see `anvyl model list`)"),
    name: str = typer.Option("", "--name", "-n", help="Container name [default: model-<id>]"),
    port: int = typer.Option(
        config.DEFAULT_MODEL_PORT, "--port", "-p", help="Host port for the OpenAI API"
    ),
    host_id: str = typer.Option("", "--host-id", help="Target host id [default: this host]"),
    memory: str = typer.Option(
        "", "--memory", "-m", help="Memory limit, e.g. 8g or 4096m [default: no limit]"
    ),
    cpus: float = typer.Option(0.0, "--cpus", help="CPU limit, e.g. 1.5 [default: no limit]"),
    ctx: int = typer.Option(0, "--ctx", help="Context length [default: the model's]"),
    max_queue: int = typer.Option(0, "--max-queue", help="Requests waiting before 429"),
    api_key: str = typer.Option(
        "", "--api-key", envvar="ANVYL_MODEL_API_KEY", help="Require this bearer key"
    ),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Host address to publish the port on"),
    startup_script: str = typer.Option(
        "", "--startup-script", help="Script (on the server's machine) run before the server"
    ),
    dtype: str = typer.Option("", "--dtype", help="Weights: auto, float32, float16, quantized"),
    force: bool = typer.Option(False, "--force", help="Start even below the estimated memory"),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once the container runs"),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait for ready"),
    restart: str = typer.Option(
        "", "--restart", help="Once ready: no, on-failure or on-failure:N (N restarts at most)"
    ),
    replicas: int = typer.Option(
        1, "--replicas", min=1, help="Swarm only: replicas, each on its own node"
    ),
    runtime: str = typer.Option(
        "",
        "--runtime",
        help="container, or process (a local process, no engine) [default: the server's]",
        show_default=False,
    ),
    keep_alive: str = typer.Option(
        "",
        "--keep-alive",
        help="Unload after this idle time (10m, 90s, 0; -1: never) [default: never]",
        show_default=False,
    ),
    allow_origin: list[str] = typer.Option(
        [],
        "--allow-origin",
        help="A web origin (scheme://host[:port], or *) whose pages may call the model from a"
        " browser, with CORS; repeatable",
        show_default=False,
    ),
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """Start a model container; wait until it answers, then print its URL and a curl line."""
    from rich.markup import escape

    from anvyl.api import anvyl_pb2 as pb

    if not 1 <= port <= 65535:  # 0 on the wire means "the default port": refuse it here
        output.fail(
            f"invalid port {port}: choose a port between 1 and 65535", code=output.EXIT_USAGE
        )
    client = connect(anvyl_host, anvyl_port)
    request = pb.StartModelRequest(
        model_id=model_id,
        name=name,
        port=port,
        host_id=host_id,
        memory=memory,
        cpus=cpus,
        ctx=ctx,
        max_queue=max_queue,
        api_key=api_key,
        bind=bind,
        startup_script=startup_script,
        dtype=dtype,
        force=force,
        detach=detach,
        wait_timeout_seconds=timeout,
        restart=restart,
        replicas=replicas,
        runtime=runtime,
        keep_alive=keep_alive,
        allow_origins=allow_origin,
    )
    deployment = None
    err = output.console(stderr=True)
    with client.errors(), err.status("Starting") as status:
        for event in client.invoke("models.StartModel", request):
            if event.HasField("deployment"):
                deployment = event.deployment
                continue
            label = START_PHASES.get(event.phase, event.phase)
            status.update(f"{label}: {event.message.strip()[:100]}")
            if not event.message.startswith("  "):  # raw build output stays in the spinner
                err.print(f"[dim]{label}[/dim] {escape(event.message)}", highlight=False)
    if deployment is None:
        output.fail("the server ended the start without a result")
    _print_started(deployment, api_key=bool(api_key))


def _print_started(d: pb.Deployment, *, api_key: bool) -> None:
    con = output.console()
    state = "ready" if d.state == "ready" else f"{d.state} (loading; see `anvyl model ps`)"
    con.print(f"[green]✓[/green] {d.name} ({d.container_id[:12]}, {d.runtime}) {state}")
    con.print(f"  OpenAI base URL: {d.url}/v1")
    auth = ' -H "Authorization: Bearer $ANVYL_MODEL_API_KEY"' if api_key else ""
    body = f'{{"model": "{d.model_id}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
    con.print(
        f'  curl -X POST {d.url}/v1/chat/completions -H "Content-Type: application/json"'
        f"{auth} -d '{body}'",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


@app.command("ps")
def ps(
    out: OutputOption = OutputFormat.table,
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """List model deployments with their state, URL, uptime, memory and throughput."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(anvyl_host, anvyl_port).call(
        "models.ListDeployments", pb.ListDeploymentsRequest()
    )
    output.print_listing(
        out, "deployments", reply.deployments, deployment_json, PS_COLUMNS, _deployment_row
    )
    if out is not OutputFormat.json:
        print_replicas(reply.deployments)


def _deployment_row(d: Any) -> list[str]:
    return [
        d.name,
        d.model_id,
        d.runtime or "container",
        d.container_id[:12],
        d.host_id,
        d.url,
        _state_text(d),
        _uptime_text(d.uptime_seconds),
        output.human_bytes(d.memory_used_bytes)
        + (f" / {output.human_bytes(d.memory_limit_bytes)}" if d.memory_limit_bytes else ""),
        f"{d.tokens_per_second:.1f}" if d.tokens_per_second else "-",
        unload_text(d),
    ]


def unload_text(d: Any, now: float | None = None) -> str:
    """When a deployment unloads: `in 4m` (idle), `when idle` (serving now), `never`;
    `on demand` first when a request started it."""
    import time

    if d.keep_alive_seconds < 0:
        when = "never"
    elif not d.unload_at:
        when = "when idle"
    else:
        left = max(0.0, d.unload_at - (time.time() if now is None else now))
        when = f"in {_uptime_text(left)}" if left >= 1 else "now"
    return f"on demand, {when}" if d.on_demand else when


@app.command("logs")
def logs(
    ref: str = typer.Argument(..., help="Deployment name or id, model id, or container id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output"),
    tail: str | None = typer.Option(
        None, "--tail", "-n", help="Only the last N lines (a number, or 'all')", show_default=False
    ),
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """Print a model server's output (any runtime); with --follow, until Ctrl-C or it stops."""
    from anvyl.api import anvyl_pb2 as pb
    from anvyl.cli.container import parse_tail, print_log_stream

    lines = parse_tail(tail)
    client = connect(anvyl_host, anvyl_port)
    request = pb.DeploymentLogsRequest(ref=ref, follow=follow)
    if lines is not None:
        request.tail = lines
    call = client.invoke(
        "models.DeploymentLogs", request, timeout=None if follow else CALL_TIMEOUT_S
    )
    print_log_stream(call, client.target)


@app.command("scale")
def scale(
    ref: str = typer.Argument(..., help="Deployment name or id"),
    replicas: int = typer.Argument(..., min=0, help="Number of replicas (Swarm deployments)"),
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """Change how many replicas of a Swarm deployment run (each on its own node)."""
    from anvyl.api import anvyl_pb2 as pb

    d = connect(anvyl_host, anvyl_port).call(
        "cluster.ScaleModel", pb.ScaleModelRequest(ref=ref, replicas=replicas)
    )
    typer.echo(f"{d.name} scaled to {replicas} replica(s)")


@app.command("stop")
def stop(
    ref: str = typer.Argument(..., help="Model id, container name, or container id / prefix"),
    timeout: int | None = typer.Option(
        None, "--timeout", "-t", help="Seconds for in-flight requests to finish [default: 30]"
    ),
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """Stop a model gracefully and remove its container."""
    from anvyl.api import anvyl_pb2 as pb

    client = connect(anvyl_host, anvyl_port)
    request = pb.StopModelRequest(ref=ref)
    if timeout is not None:
        request.timeout_seconds = timeout
    with client.errors(), output.console(stderr=True).status(f"Stopping {ref}"):
        d = client.invoke("models.StopModel", request)
    output.console().print(f"Stopped {d.name} ({d.model_id}, {d.container_id[:12]})")
    sys.stdout.flush()
