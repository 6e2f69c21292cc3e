"""`anvyl image`: build the model-server image on the local Docker engine."""

from __future__ import annotations

from pathlib import Path

import typer

from anvyl.cli.client import CONTEXT_SETTINGS

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
        help="Base image; `debian-bootstrap` makes a Debian base here with debootstrap "
        "(no registry needed; root)",
    ),
    ca_bundle: Path | None = typer.Option(
        None,
        "--ca-bundle",
        exists=True,
        dir_okay=False,
        readable=True,
        help="CA bundle for a TLS-intercepting proxy (host-side pip download, apt in the build)",
        show_default=False,
    ),
    tag: str | None = typer.Option(
        None, "--tag", help="Image reference (default anvyl/modelserver:<version>)"
    ),
) -> None:
    """Build the model-server image; skipped when its inputs have not changed."""
    from rich.markup import escape
    from rich.text import Text

    from anvyl import config
    from anvyl.cli import output
    from anvyl.errors import AnvylError
    from anvyl.runtime import DockerDriver

    out = output.console()
    driver = DockerDriver()  # the engine of this machine, through the runtime's one edge
    try:
        driver.ping()
    except AnvylError as exc:
        output.error_line(f"no Docker engine answers: {exc.message}")
        raise typer.Exit(output.EXIT_UNREACHABLE) from None

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

    step = ["Starting"]
    try:
        with out.status("Starting", spinner="dots") as status:
            ref = driver.build_image(
                base_image=base_image,
                ca_bundle=ca_bundle,
                tag=tag,
                progress=progress,
                cache_dir=config.anvyl_home() / "cache",
            )
        size = driver.image_size(ref)
    except AnvylError as exc:
        output.error_line(exc.message)
        raise typer.Exit(output.EXIT_ERROR) from None
    except KeyboardInterrupt:
        raise typer.Exit(output.EXIT_INTERRUPTED) from None
    finally:
        driver.close()
    out.print(f"[green]✓[/green] {escape(ref)} [dim]({size / 1e6:.0f} MB)[/dim]")
