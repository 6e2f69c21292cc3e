"""`anvyl host`: list hosts and show a host's resource usage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from anvyl.cli import output
from anvyl.cli.client import CALL_TIMEOUT_S, CONTEXT_SETTINGS, HostOption, PortOption, connect
from anvyl.cli.output import OutputFormat, OutputOption

if TYPE_CHECKING:
    from anvyl.api import anvyl_pb2 as pb

app = typer.Typer(help="Docker hosts Anvyl drives.", context_settings=CONTEXT_SETTINGS)


@app.command("list")
def list_hosts(
    out: OutputOption = OutputFormat.table,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """List hosts (every Swarm node when the engine manages a Swarm) with their resources."""
    import grpc

    from anvyl.api import anvyl_pb2 as pb

    client = connect(host, port)
    with client.errors():
        try:
            nodes = client.invoke(
                "cluster.ListNodes", pb.ListNodesRequest(), timeout=CALL_TIMEOUT_S
            ).nodes
        except grpc.RpcError as exc:
            # Not a Swarm manager, or the engine is down: list the registered engines, which
            # says which are unreachable and why. No server at all is still an error.
            fallback = exc.code() == grpc.StatusCode.FAILED_PRECONDITION or (
                exc.code() == grpc.StatusCode.UNAVAILABLE and not output.server_unreachable(exc)
            )
            if not fallback:
                raise
            nodes = None
    if nodes is not None:
        from anvyl.cli.cluster import NODE_COLUMNS, node_row

        output.print_listing(out, "hosts", nodes, output.node_json, NODE_COLUMNS, node_row)
        return
    reply = client.call("hosts.ListHosts", pb.ListHostsRequest())
    output.print_listing(
        out,
        "hosts",
        reply.hosts,
        output.host_json,
        ["ID", "NAME", "ADDRESS", "STATUS", "CPUS", "MEMORY", "ENGINE", "RUNNING", "RUNTIME"],
        _host_row,
    )


def _host_row(h: pb.Host) -> list[str]:
    from anvyl.api import anvyl_pb2 as pb

    reachable = h.status == pb.HOST_STATUS_REACHABLE
    if reachable:
        status = "[green]reachable[/green]"
    else:
        status = f"[red]unreachable[/red] [dim]({h.status_reason})[/dim]"
    return [
        h.id,
        h.name + (" [dim](local)[/dim]" if h.local else ""),
        h.address,
        status,
        str(h.cpus) if reachable else "-",
        output.human_bytes(h.memory_bytes) if reachable else "-",
        h.engine_version or "-",
        str(h.running_containers) if reachable else "-",
        h.runtime or "container",
    ]


@app.command("metrics")
def metrics(
    host_id: str = typer.Argument(..., help="Host id, unique id prefix or name"),
    out: OutputOption = OutputFormat.table,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Show CPU, memory, disk and load of a host, and the usage of Anvyl's containers on it."""
    from anvyl.api import anvyl_pb2 as pb

    m = connect(host, port).call("hosts.GetHostMetrics", pb.GetHostMetricsRequest(host_id=host_id))
    if out is OutputFormat.json:
        output.print_json(output.metrics_json(m))
        return
    if m.HasField("node"):
        _print_node(m.node)
    hb = output.human_bytes
    if m.machine_measured or not m.HasField("node"):
        output.print_table(
            f"host {m.host_id}" if not m.HasField("node") else "machine",
            ["CPU", "MEMORY", "DISK", "LOAD"],
            [
                [
                    f"{m.cpu_percent:.1f}% of {m.cpu_count}",
                    f"{hb(m.memory_used_bytes)} / {hb(m.memory_total_bytes)}",
                    f"{hb(m.disk_used_bytes)} / {hb(m.disk_total_bytes)} ({m.disk_path})",
                    f"{m.load1:.2f} {m.load5:.2f} {m.load15:.2f}",
                ]
            ],
        )
    stats = m.container_stats or not m.HasField("node")
    tasks = any(c.task_id for c in m.containers)
    rows = []
    for c in m.containers:
        row = [c.id[:12] or "-", c.name]
        if tasks:
            row += [c.deployment or "-", c.state or "-"]
        if stats:
            row += [f"{c.cpu_percent:.1f}", hb(c.memory_used_bytes), hb(c.memory_limit_bytes)]
        else:
            row += ["n/a", "n/a", "n/a"]
        rows.append(row)
    columns = ["CONTAINER ID", "NAME"]
    if tasks:
        columns += ["DEPLOYMENT", "TASK"]
    output.print_table("containers", [*columns, "CPU %", "MEMORY", "LIMIT"], rows)
    if not stats:
        from rich.markup import escape

        output.console(stderr=True).print(
            f"[yellow]no per-container figures:[/yellow] {escape(m.container_stats_reason)}",
            highlight=False,
        )


def _print_node(n: pb.NodeMetrics) -> None:
    """The node's own table and, when its engine answered, the engine's facts."""
    hb = output.human_bytes
    node = n.node
    output.print_table(
        f"node {node.hostname} ({node.id[:12]})",
        ["ADDRESS", "ROLE", "AVAILABILITY", "STATE", "CPUS", "MEMORY", "ENGINE", "LABELS"],
        [
            [
                node.address,
                node.role + (" (leader)" if node.leader else ""),
                node.availability,
                node.state,
                f"{n.nano_cpus / 1e9:g}",
                hb(node.memory_bytes),
                node.engine_version,
                ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-",
            ]
        ],
    )
    where = n.engine_url or "no address known"
    if n.HasField("engine"):
        e = n.engine
        output.print_table(
            f"engine {where} ({n.engine_state})",
            ["NAME", "VERSION", "API", "OS", "KERNEL", "CONTAINERS", "IMAGES", "STORAGE"],
            [
                [
                    e.name,
                    e.version,
                    e.api_version,
                    f"{e.os} ({e.architecture})",
                    e.kernel_version,
                    f"{e.containers_running} running / {e.containers}",
                    str(e.images),
                    e.storage_driver,
                ]
            ],
        )
    else:
        from rich.markup import escape

        output.console(stderr=True).print(
            f"[yellow]engine {escape(where)}: {n.engine_state}[/yellow] "
            f"[dim]({escape(n.engine_reason)})[/dim]",
            highlight=False,
        )


@app.command("add")
def add(
    node: str = typer.Argument(..., help="Swarm node id, unique id prefix or hostname"),
    engine: str = typer.Option(
        ..., "--engine", help="The node's own engine: tcp://HOST:PORT or ssh://USER@HOST"
    ),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate (PEM) to verify it"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Client certificate (PEM)"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Client private key (PEM)"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Tell Anvyl how to reach a Swarm node's own engine (to put images and models on it).

    The server connects, checks that the engine is that node, and only then records it.
    """
    from anvyl.api import anvyl_pb2 as pb

    pems = {}
    for name, path in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        try:
            pems[name] = path.read_bytes() if path is not None else b""
        except OSError as exc:
            output.fail(f"cannot read --{name.replace('_', '-')} {path}: {exc.strerror}")
    reply = connect(host, port).call(
        "cluster.SetNodeEngine", pb.SetNodeEngineRequest(node=node, url=engine, **pems)
    )
    typer.echo(f"node {reply.hostname} ({reply.id[:12]}): engine {reply.engine_url} recorded")
    if reply.engine_url.startswith("tcp://") and not pems["tls_cert"]:
        output.console(stderr=True).print(
            "[yellow]warning:[/yellow] this engine is reached without TLS: anyone who can reach "
            "that port controls the node; use --tls-ca/--tls-cert/--tls-key or ssh://",
            highlight=False,
        )


@app.command("remove")
def remove(
    node: str = typer.Argument(..., help="Swarm node id, unique id prefix or hostname"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Forget how to reach a node's engine (the node stays in the Swarm)."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call(
        "cluster.RemoveNodeEngine", pb.RemoveNodeEngineRequest(node=node)
    )
    typer.echo(f"node {reply.hostname} ({reply.id[:12]}): engine forgotten")


@app.command("drain")
def drain(
    node: str = typer.Argument(..., help="Swarm node id, unique id prefix or hostname"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Move every model off a Swarm node (its replicas restart on other nodes)."""
    _set_availability(node, "drain", host, port)


@app.command("activate")
def activate(
    node: str = typer.Argument(..., help="Swarm node id, unique id prefix or hostname"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Let a drained or paused Swarm node take models again."""
    _set_availability(node, "active", host, port)


def _set_availability(node: str, availability: str, host: str | None, port: int | None) -> None:
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call(
        "cluster.SetNodeAvailability",
        pb.SetNodeAvailabilityRequest(node=node, availability=availability),
    )
    typer.echo(f"node {reply.hostname} ({reply.id[:12]}) is now {reply.availability}")
