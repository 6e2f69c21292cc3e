"""Rendering: Rich tables, `-o json` with a stable schema, and errors as one red line.

Exit codes: 0 success; 1 an error the server reported (its message is printed); 2 the server
cannot be reached, or bad command-line usage; 130 interrupted (Ctrl-C). `container exec` exits
with the command's own code.
"""

from __future__ import annotations

import enum
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from anvyl import config

if TYPE_CHECKING:
    import grpc
    from rich.console import Console

    from anvyl.api import anvyl_pb2 as pb
    from anvyl.cli.address import Target

EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 240
ERROR_KEY = "anvyl-error"  # trailing metadata set by the server's error interceptor

T = TypeVar("T")


class OutputFormat(enum.StrEnum):
    """How listings are printed."""

    table = "table"
    json = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format", case_sensitive=False),
]


def console(*, stderr: bool = False) -> Console:
    """A Rich console (imported on first use to keep start-up fast)."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is not cut at 80 columns; errors stay on one line whatever the width.
    width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr, width=width)


def print_json(data: Any) -> None:
    """Print JSON (two-space indent, keys in schema order)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Rich table; an empty listing prints a dim note instead."""
    from rich.table import Table

    out = console()
    if not rows:
        out.print(f"[dim]{title or 'nothing'}: none[/dim]" if title else "[dim]none[/dim]")
        return
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_listing(
    out: OutputFormat,
    key: str,
    items: Sequence[T],
    to_json: Callable[[T], dict[str, Any]],
    columns: Sequence[str],
    to_row: Callable[[T], Sequence[str]],
    *,
    title: str | None = None,
) -> None:
    """Print a listing: `{key: [to_json(item), ...]}` for `-o json`, else a table of rows.

    Example:
        print_listing(out, "hosts", hosts, host_json, ["ID", "NAME"], lambda h: [h.id, h.name])
    """
    if out is OutputFormat.json:
        print_json({key: [to_json(item) for item in items]})
    else:
        print_table(title, columns, [to_row(item) for item in items])


def error_line(message: str, *, prefix: str = "error: ") -> None:
    """Print one red line on stderr."""
    from rich.markup import escape

    console(stderr=True).print(f"[red]{escape(prefix + message)}[/red]")


def unreachable_message(target: Target) -> str:
    """The one line printed when no server answers."""
    return f"cannot reach the Anvyl server at {target.address} — start it with `anvyl serve`"


def server_unreachable(exc: grpc.RpcError) -> bool:
    """True when the RPC failed because no server answered (not an UNAVAILABLE it sent)."""
    import grpc

    if exc.code() is not grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
        return False
    trailing = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    return not any(key == ERROR_KEY for key, _ in trailing)


def fail(message: str, code: int = EXIT_ERROR, *, prefix: str = "error: ") -> NoReturn:
    """Print the error line and exit."""
    error_line(message, prefix=prefix)
    raise typer.Exit(code)


@contextmanager
def cli_errors(target: Target) -> Iterator[None]:
    """Turn gRPC failures and Ctrl-C into one line and an exit code (ANVYL_DEBUG: tracebacks)."""
    import grpc

    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except grpc.RpcError as exc:
        if config.debug_enabled():
            traceback.print_exc()
        if server_unreachable(exc):
            fail(unreachable_message(target), EXIT_UNREACHABLE, prefix="")
        code = exc.code()  # type: ignore[attr-defined]
        if code is grpc.StatusCode.CANCELLED:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        fail(exc.details() or code.name.lower().replace("_", " "))  # type: ignore[attr-defined]
    except Exception as exc:
        if config.debug_enabled():
            raise
        fail(f"{type(exc).__name__}: {exc} (set ANVYL_DEBUG=1 for the traceback)")


# -- stable JSON schemas -------------------------------------------------------------------------


def iso_time(ts: float) -> str:
    """Unix seconds → ISO 8601 UTC (empty for 0)."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def container_json(c: pb.Container) -> dict[str, Any]:
    """The `-o json` schema of a container."""
    return {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "state": c.state,
        "status": c.status,
        "host_id": c.host_id,
        "created_at": iso_time(c.created_at),
        "labels": dict(sorted(c.labels.items())),
        "ports": [
            {
                "container_port": p.container_port,
                "protocol": p.protocol,
                "host_ip": p.host_ip,
                "host_port": p.host_port,
            }
            for p in c.ports
        ],
    }


def host_json(h: pb.Host) -> dict[str, Any]:
    """The `-o json` schema of a host."""
    from anvyl.api import anvyl_pb2 as pb

    return {
        "id": h.id,
        "name": h.name,
        "address": h.address,
        "status": "reachable" if h.status == pb.HOST_STATUS_REACHABLE else "unreachable",
        "status_reason": h.status_reason,
        "cpus": h.cpus,
        "memory_bytes": h.memory_bytes,
        "engine_version": h.engine_version,
        "running_containers": h.running_containers,
        "local": h.local,
        "created_at": iso_time(h.created_at),
        "runtime": h.runtime or "container",
    }


def metrics_json(m: pb.HostMetrics) -> dict[str, Any]:
    """The `-o json` schema of host metrics (figures not measured are null, never 0)."""
    measured = m.machine_measured or not m.HasField("node")
    stats = m.container_stats or not m.HasField("node")

    def figure(value: Any) -> Any:
        return value if measured else None

    result: dict[str, Any] = {
        "host_id": m.host_id,
        "cpu_count": m.cpu_count,
        "cpu_percent": figure(round(m.cpu_percent, 1)),
        "memory_used_bytes": figure(m.memory_used_bytes),
        "memory_total_bytes": m.memory_total_bytes,
        "disk_path": figure(m.disk_path),
        "disk_used_bytes": figure(m.disk_used_bytes),
        "disk_total_bytes": figure(m.disk_total_bytes),
        "load": figure([round(m.load1, 2), round(m.load5, 2), round(m.load15, 2)]),
        "containers": [
            {
                "id": c.id,
                "name": c.name,
                "cpu_percent": round(c.cpu_percent, 1) if stats else None,
                "memory_used_bytes": c.memory_used_bytes if stats else None,
                "memory_limit_bytes": c.memory_limit_bytes if stats else None,
                **(
                    {"deployment": c.deployment, "task_id": c.task_id, "state": c.state}
                    if c.task_id
                    else {}
                ),
            }
            for c in m.containers
        ],
    }
    if m.HasField("node"):
        n = m.node
        result["node"] = {
            **node_json(n.node),
            "nano_cpus": n.nano_cpus,
            "engine_url": n.engine_url,
            "engine_state": n.engine_state,
            "engine_reason": n.engine_reason,
            "engine": engine_facts_json(n.engine) if n.HasField("engine") else None,
        }
        result["container_stats"] = m.container_stats
        result["container_stats_reason"] = m.container_stats_reason
    return result


def node_json(n: pb.Node) -> dict[str, Any]:
    """One node, in `-o json`'s schema."""
    return {
        "id": n.id,
        "hostname": n.hostname,
        "address": n.address,
        "role": n.role,
        "leader": n.leader,
        "availability": n.availability,
        "state": n.state,
        "cpus": n.cpus,
        "memory_bytes": n.memory_bytes,
        "engine_version": n.engine_version,
        "labels": dict(n.labels),
        "models": list(n.models),
        "engine_url": n.engine_url,
        "engine_state": n.engine_state,
        "engine_reason": n.engine_reason,
    }


def engine_facts_json(e: pb.EngineFacts) -> dict[str, Any]:
    """The `-o json` schema of an engine's `docker info` facts."""
    return {
        "name": e.name,
        "version": e.version,
        "api_version": e.api_version,
        "os": e.os,
        "kernel_version": e.kernel_version,
        "architecture": e.architecture,
        "cpus": e.cpus,
        "memory_bytes": e.memory_bytes,
        "containers": e.containers,
        "containers_running": e.containers_running,
        "images": e.images,
        "storage_driver": e.storage_driver,
        "cgroup_version": e.cgroup_version,
    }


def human_bytes(n: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def ports_text(c: pb.Container) -> str:
    """Docker-style ports: `127.0.0.1:8080->1234/tcp, 8080/tcp`."""
    seen: list[str] = []
    for p in c.ports:
        if p.host_port:
            text = f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}/{p.protocol}"
        else:
            text = f"{p.container_port}/{p.protocol}"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)
