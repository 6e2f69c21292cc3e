"""`anvyl container`: list, follow logs of, exec into and stop Anvyl-managed containers."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import typer

from anvyl.cli import output
from anvyl.cli.client import CALL_TIMEOUT_S, CONTEXT_SETTINGS, HostOption, PortOption, connect
from anvyl.cli.output import OutputFormat, OutputOption

app = typer.Typer(
    help="Anvyl-managed containers (label anvyl.managed=true).", context_settings=CONTEXT_SETTINGS
)

ContainerArg = typer.Argument(..., help="Container id, unique id prefix or name")
HostIdOption = typer.Option("", "--host-id", help="Only this host (id, prefix or name)")


def parse_tail(value: str | None) -> int | None:
    """`--tail`: a non-negative line count or `all`."""
    if value is None or value.strip().lower() == "all":
        return None
    text = value.strip()
    if not text.isdigit():
        raise typer.BadParameter(f"{value!r} is not a line count (a number >= 0, or 'all')")
    return int(text)


@app.command("list")
def list_containers(
    all: bool = typer.Option(False, "--all", "-a", help="Include stopped containers"),
    host_id: str = HostIdOption,
    label: list[str] = typer.Option(
        [], "--label", "-l", help="Only containers with this label (key=value or key); repeatable"
    ),
    out: OutputOption = OutputFormat.table,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """List Anvyl-managed containers (running ones unless --all)."""
    from anvyl.api import anvyl_pb2 as pb

    reply = connect(host, port).call(
        "containers.ListContainers",
        pb.ListContainersRequest(all=all, host_id=host_id, labels=label),
    )
    output.print_listing(
        out,
        "containers",
        reply.containers,
        output.container_json,
        ["CONTAINER ID", "NAME", "IMAGE", "STATE", "STATUS", "PORTS", "HOST"],
        lambda c: [c.id[:12], c.name, c.image, c.state, c.status, output.ports_text(c), c.host_id],
    )


@app.command("logs")
def logs(
    container: str = ContainerArg,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output"),
    tail: str | None = typer.Option(
        None, "--tail", "-n", help="Only the last N lines (a number, or 'all')", show_default=False
    ),
    host_id: str = HostIdOption,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Print a container's output; with --follow, until Ctrl-C or the container stops."""
    from anvyl.api import anvyl_pb2 as pb

    lines = parse_tail(tail)
    client = connect(host, port)
    request = pb.StreamLogsRequest(container=container, host_id=host_id, follow=follow)
    if lines is not None:
        request.tail = lines
    call = client.invoke(
        "containers.StreamLogs", request, timeout=None if follow else CALL_TIMEOUT_S
    )
    print_log_stream(call, client.target)


def print_log_stream(call: Any, target: str) -> None:
    """Write a streamed log call's chunks to stdout until it ends; Ctrl-C cancels it."""
    out = sys.stdout.buffer
    interrupted = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        # Cancelling wakes the stream at once, wherever it waits.
        interrupted.set()
        call.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with output.cli_errors(target):
            for chunk in call:
                out.write(chunk.data)
                out.flush()
    except typer.Exit:
        if not interrupted.is_set():
            raise
    finally:
        call.cancel()
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        # Ctrl-C: leave now. Interpreter teardown with gRPC's threads could hang (seen in CI).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(output.EXIT_INTERRUPTED)


@app.command(
    "exec",
    context_settings={
        **CONTEXT_SETTINGS,
        # Everything after the container is the command, its own options included.
        "allow_interspersed_args": False,
        "ignore_unknown_options": True,
    },
)
def exec_command(
    container: str = ContainerArg,
    command: list[str] = typer.Argument(..., help="The command and its arguments ('--' optional)"),
    host_id: str = HostIdOption,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run a command inside a running container; exits with the command's exit code."""
    from anvyl.api import anvyl_pb2 as pb

    argv = command[1:] if command and command[0] == "--" else list(command)
    if not argv:
        raise typer.BadParameter("a command to run is required", param_hint="COMMAND")
    reply = connect(host, port).call(
        "containers.ExecContainer",
        pb.ExecContainerRequest(container=container, host_id=host_id, command=argv),
        timeout=None,
    )
    sys.stdout.buffer.write(reply.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(reply.stderr)
    sys.stderr.buffer.flush()
    raise typer.Exit(reply.exit_code)


@app.command("stop")
def stop(
    container: str = ContainerArg,
    timeout: int | None = typer.Option(
        None,
        "--timeout",
        "-t",
        min=0,
        max=3600,
        help="Seconds to wait before killing it [default: the engine's, 10]",
        show_default=False,
    ),
    host_id: str = HostIdOption,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Stop a container (SIGTERM, then SIGKILL after the timeout)."""
    from anvyl.api import anvyl_pb2 as pb

    request = pb.StopContainerRequest(container=container, host_id=host_id)
    if timeout is not None:
        request.timeout_seconds = timeout
    stopped = connect(host, port).call(
        "containers.StopContainer", request, timeout=CALL_TIMEOUT_S + (timeout or 10)
    )
    output.console().print(f"stopped {stopped.name} ({stopped.id[:12]}): {stopped.status}")
