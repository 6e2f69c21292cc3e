"""`anvyl cluster`: the Swarm behind the control plane (init, join token), and its renderers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from anvyl.cli import output
from anvyl.cli.client import CONTEXT_SETTINGS, HostOption, PortOption, connect

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anvyl.api import anvyl_pb2 as pb

app = typer.Typer(
    help="The Docker Swarm Anvyl places models on (when its engine is a manager).",
    context_settings=CONTEXT_SETTINGS,
)


@app.command("init")
def init(
    advertise_addr: str = typer.Option("", "--advertise-addr", help="Address other nodes use"),
    listen_addr: str = typer.Option("", "--listen-addr", help="Address:port to listen on"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Make the server's engine the first manager of a new Swarm."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call(
        "cluster.InitCluster",
        pb.InitClusterRequest(advertise_addr=advertise_addr, listen_addr=listen_addr),
    )
    typer.echo(f"Swarm initialised; this engine is node {reply.node_id} (manager)")
    typer.echo("Add nodes with the command `anvyl cluster join-token` prints.")


@app.command("join-token")
def join_token(
    role: str = typer.Argument("worker", help="worker or manager"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the token only"),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Print the command another engine runs to join the Swarm."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call("cluster.GetJoinToken", pb.GetJoinTokenRequest(role=role))
    typer.echo(reply.token if quiet else reply.command)


NODE_COLUMNS = (
    "ID",
    "HOSTNAME",
    "ADDRESS",
    "ROLE",
    "AVAILABILITY",
    "STATE",
    "CPUS",
    "MEMORY",
    "ENGINE",
    "LABELS",
    "MODELS",
    "ENGINE ACCESS",
)


def node_row(n: pb.Node) -> list[str]:
    """One node in the `host list` table of a Swarm (`NODE_COLUMNS`)."""
    state = f"[green]{n.state}[/green]" if n.state == "ready" else f"[red]{n.state}[/red]"
    return [
        n.id[:12],
        n.hostname,
        n.address,
        n.role + (" (leader)" if n.leader else ""),
        n.availability,
        state,
        str(n.cpus),
        output.human_bytes(n.memory_bytes),
        n.engine_version,
        ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "-",
        ", ".join(n.models) or "-",
        _engine_access(n),
    ]


def _engine_access(n: pb.Node) -> str:
    """Whether Anvyl reaches the node's own engine (needed to put images and models there)."""
    from rich.markup import escape

    if n.engine_state == "reachable":
        return f"[green]reachable[/green] [dim]{n.engine_url}[/dim]"
    if n.engine_state == "unreachable":
        return f"[red]unreachable[/red] [dim]{n.engine_url}: {escape(n.engine_reason)}[/dim]"
    return "[dim]unknown (anvyl host add)[/dim]"


def replica_json(r: pb.Replica) -> dict[str, Any]:
    """One replica, in `-o json`'s schema."""
    return {
        "slot": r.slot,
        "task_id": r.task_id,
        "node_id": r.node_id,
        "node": r.node,
        "address": r.address,
        "state": r.state,
        "ready": r.ready,
        "since": output.iso_time(r.since) if r.since else None,
        "restarts": r.restarts,
        "error": r.task_error,
    }


def print_replicas(deployments: Sequence[pb.Deployment]) -> None:
    """One row per replica of the Swarm deployments (none printed when there are none)."""
    rows = []
    for d in deployments:
        for r in d.replicas:
            ago = max(0.0, time.time() - r.since) if r.since else 0.0
            rows.append(
                [
                    d.name,
                    str(r.slot),
                    r.node or r.node_id[:12],
                    f"{r.address}:{d.port}" if r.address else "-",
                    r.state + (" (ready)" if r.ready else ""),
                    f"{ago:.0f}s ago" if r.since else "-",
                    str(r.restarts),
                    r.task_error or "",
                ]
            )
    if rows:
        output.print_table(
            "replicas",
            ["DEPLOYMENT", "SLOT", "NODE", "ENDPOINT", "STATE", "SINCE", "RESTARTS", "ERROR"],
            rows,
        )
