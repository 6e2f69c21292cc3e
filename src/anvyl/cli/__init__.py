"""The `anvyl` command line: Typer commands that call the gRPC API and render with Rich."""
