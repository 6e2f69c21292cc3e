"""`anvyl model pull`: a model from the Hugging Face Hub, downloaded and checked by the server."""

from __future__ import annotations

import typer

from anvyl.cli import output
from anvyl.cli.client import AnvylHostOption, AnvylPortOption, connect


def pull(
    repo: str = typer.Argument(
        ...,
        help="OWNER/NAME[:REVISION] on the Hugging Face Hub (an MLX or a GGUF repository)",
        show_default=False,
    ),
    file: str = typer.Option(
        "", "--file", "-f", help="For a GGUF repository: the .gguf file (default: its Q4_K_M)"
    ),
    name: str = typer.Option("", "--name", "-n", help="Model id (default: from the repository)"),
    host: AnvylHostOption = None,
    port: AnvylPortOption = None,
) -> None:
    """Pull a model from the Hugging Face Hub into ANVYL_HOME/models (Ctrl-C keeps a partial)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from anvyl.api import anvyl_pb2 as pb

    client = connect(host, port)
    model = None
    notes: list[str] = []
    with client.errors():
        call = client.invoke(
            "models.PullModel", pb.PullModelRequest(repo=repo, file=file, name=name)
        )
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=output.console(stderr=True),
                transient=True,
            ) as bar:
                task = bar.add_task("pulling", total=1.0)
                for event in call:
                    if event.HasField("model"):
                        model = event.model
                    else:
                        if event.step.startswith("pulling ") and event.step not in notes:
                            notes.append(event.step)
                        bar.update(task, completed=event.fraction, description=event.step)
        except KeyboardInterrupt:
            call.cancel()  # the server stops the download and keeps what it has
            output.console(stderr=True).print("Pull cancelled; pull again to resume.")
            raise typer.Exit(output.EXIT_INTERRUPTED) from None
    for note in notes:
        output.console(stderr=True).print(note[0].upper() + note[1:])
    if model is not None:
        output.console().print(
            f"Pulled [bold]{model.id}[/bold] ({model.architecture}, {model.quantization}, "
            f"{output.human_bytes(model.size_bytes)}) from {model.origin} — start it with "
            f"`anvyl model start {model.id}`"
        )
