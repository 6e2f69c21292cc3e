"""`anvyl image`: build the model-server image on a host's engine, through the server."""

from __future__ import annotations

from pathlib import Path

import typer

from anvyl.cli.client import CONTEXT_SETTINGS, HostOption, PortOption, connect

app = typer.Typer(
    help="The model-server image (built locally, offline-capable).",
    context_settings=CONTEXT_SETTINGS,
    no_args_is_help=True,
)


@app.callback()
def image() -> None:
    """The model-server image (built locally, offline-capable)."""


@app.command()
def build(
    base_image: str = typer.Option(
        "python:3.12-slim",
        "--base-image",
        help="Base image; `debian-bootstrap` makes a Debian base on the server's machine with "
        "debootstrap (no registry needed; the server runs as root)",
    ),
    ca_bundle: Path | None = typer.Option(
        None,
        "--ca-bundle",
        exists=True,
        dir_okay=False,
        readable=True,
        help="CA bundle for a TLS-intercepting proxy (read here, sent to the server for its pip "
        "download and apt in the build)",
        show_default=False,
    ),
    tag: str = typer.Option(
        "",
        "--tag",
        help="Image reference (default anvyl/modelserver:<version>)",
        show_default=False,
    ),
    host_id: str = typer.Option(
        "", "--host-id", help="Build on this host's engine (default: the server's machine)"
    ),
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Build the model-server image on the server's engine; skipped when its inputs are unchanged.

    The server builds it (the CLI opens no engine connection); `--ca-bundle` is read here and
    sent along.
    """
    from rich.markup import escape
    from rich.text import Text

    from anvyl.api import anvyl_pb2 as pb
    from anvyl.cli import output

    out = output.console()
    bundle = ca_bundle.read_bytes() if ca_bundle is not None else b""
    request = pb.BuildImageRequest(
        host_id=host_id, base_image=base_image, ca_bundle=bundle, tag=tag
    )

    def progress(line: str) -> None:
        text = " ".join(line.split())
        if not text:
            return
        if line.startswith("  "):  # raw tool output: only the spinner shows it
            status.update(Text.assemble((step[0], "bold"), " ", (text[:100], "dim")))
            return
        step[0] = text[:80]
        out.print(Text.assemble(("• ", "dim"), text), no_wrap=True, overflow="ellipsis")
        status.update(Text(step[0], style="bold"))

    client = connect(host, port)
    step = ["Starting"]
    built = None
    with client.errors(), out.status("Starting", spinner="dots") as status:
        for event in client.invoke("hosts.BuildImage", request):
            if event.HasField("image"):
                built = event.image
            else:
                progress(event.line)
    if built is None:
        output.fail("the server ended the build without an image")
    out.print(f"[green]✓[/green] {escape(built.ref)} [dim]({built.size_bytes / 1e6:.0f} MB)[/dim]")
