"""`anvyl run MODEL [PROMPT]`: load the model if it is not running, then chat with it.

The load goes through the control plane (`LoadModel`: get or load, shared with the gateway's
on-demand starts), so it works with the gateway off. The chat goes to the model server's own
URL. The reply carries no secret, so a deployment whose API key only Anvyl holds (on-demand
starts of a server with a token) is reached through the gateway instead, with the server's
token; so is one whose URL is a loopback address of another machine.
"""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, Any

import typer

from anvyl.cli import output
from anvyl.cli.client import AnvylHostOption, AnvylPortOption, Client, connect

if TYPE_CHECKING:
    from anvyl.api import anvyl_pb2 as pb
    from anvyl.cli.chat import Endpoint

PROBE_TIMEOUT_S = 5.0
GATEWAY_URL_ENV = "ANVYL_GATEWAY_URL"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
LOAD_PHASES = {
    "placing": "Making room",
    "unloading": "Waiting for an unload",
    "resolving": "Resolving the model",
    "image": "Preparing the model-server image",
    "creating": "Starting the model server",
    "loading": "Loading weights",
}


class AnswerFormat(enum.StrEnum):
    """`--format`: what the answer must be."""

    json = "json"


def run(
    model_id: str = typer.Argument(..., help="Model id (see `anvyl model list`)"),
    prompt: list[str] | None = typer.Argument(
        None,
        help="What to ask (words are joined); none: read it from stdin when piped, "
        "else chat interactively",
        show_default=False,
    ),
    keep_alive: str = typer.Option(
        "",
        "--keep-alive",
        help="Idle time before the model unloads (10m, 90s, 0; -1: never); "
        "unset: the server's --keep-alive when it loads the model",
        show_default=False,
    ),
    system: str = typer.Option("", "--system", help="System prompt", show_default=False),
    answer_format: AnswerFormat | None = typer.Option(
        None, "--format", help="json: the answer is one JSON object", show_default=False
    ),
    max_tokens: int = typer.Option(
        0, "--max-tokens", min=0, help="Longest answer in tokens (0: the model's limit)"
    ),
    api_key: str = typer.Option(
        "",
        "--api-key",
        envvar="ANVYL_MODEL_API_KEY",
        help="The model's API key, when it was started with one",
        show_default=False,
    ),
    gateway_url: str = typer.Option(
        "",
        "--gateway-url",
        envvar=GATEWAY_URL_ENV,
        help="The gateway, used when the model's own URL cannot be (unset: port 50080 of "
        "the Anvyl host)",
        show_default=False,
    ),
    anvyl_host: AnvylHostOption = None,
    anvyl_port: AnvylPortOption = None,
) -> None:
    """Run a model (loading it if needed) and chat: one answer to PROMPT, or interactively."""
    from anvyl.cli.chat import Chat, ChatError, interact

    text = " ".join(prompt or ())
    interactive = not text and sys.stdin.isatty()
    if not sys.stdin.isatty():  # piped: stdin is the prompt (before any PROMPT words)
        text = "\n\n".join(part for part in (sys.stdin.read().strip(), text) if part)
        if not text:
            output.fail("no prompt: give PROMPT or pipe it on stdin", code=output.EXIT_USAGE)
    client = connect(anvyl_host, anvyl_port)

    def reconnect() -> Endpoint:
        return choose_endpoint(load(client, model_id, keep_alive), client, api_key, gateway_url)

    extra: dict[str, Any] = {}
    if answer_format is AnswerFormat.json:
        extra["response_format"] = {"type": "json_object"}
    if max_tokens:
        extra["max_tokens"] = max_tokens
    chat = Chat(model_id, reconnect(), reconnect, system=system, extra=extra)
    if interactive:
        sys.stderr.write(f"{model_id} is ready. Type /? for help, /bye or Ctrl-D to leave.\n")
        import readline  # noqa: F401  (line editing and history for input())

        interact(chat)
        return
    try:
        chat.ask(text, sys.stdout)
    except ChatError as exc:
        output.fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(output.EXIT_INTERRUPTED) from None


def load(client: Client, model_id: str, keep_alive: str) -> pb.Deployment:
    """Get or load `model_id` through `LoadModel`, a spinner on stderr showing its phases."""
    from rich.markup import escape

    from anvyl.api import anvyl_pb2 as pb

    request = pb.LoadModelRequest(model_id=model_id, keep_alive=keep_alive)
    deployment = None
    err = output.console(stderr=True)
    with client.errors(), err.status(f"Loading {escape(model_id)}") as status:
        for event in client.invoke("models.LoadModel", request):
            if event.HasField("deployment"):
                deployment = event.deployment
                continue
            label = LOAD_PHASES.get(event.phase, event.phase.capitalize())
            status.update(f"{label}: {escape(event.message.strip()[:100])}")
    if deployment is None:
        output.fail(f"the server ended the load of {model_id} without a deployment")
    return deployment


def choose_endpoint(d: pb.Deployment, client: Client, api_key: str, gateway_url: str) -> Endpoint:
    """The model's own URL when it answers us; else the gateway; else a clear error."""
    from anvyl.cli.chat import Endpoint

    direct = Endpoint(d.url, api_key)
    if _host_of(d.url) in LOOPBACK and client.target.host not in LOOPBACK:
        why = f"is on the loopback of {client.target.host}"
    else:
        why = probe(direct)
        if why is None:
            return direct
    via = Endpoint(
        (gateway_url or default_gateway(client)).rstrip("/").removesuffix("/v1"),
        client.token or api_key,
        via="gateway",
    )
    why_not = probe(via)
    if why_not is None:
        return via
    hint = "" if client.token else " (set ANVYL_TOKEN when the server has one, or --api-key)"
    output.fail(
        f"{d.model_id} runs ({d.name}) but cannot be reached: {d.url} {why}; the gateway at "
        f"{via.base_url} {why_not}{hint}; give --gateway-url if it listens elsewhere"
    )


def probe(endpoint: Endpoint) -> str | None:
    """None when `GET /v1/models` answers 200 there with our key, else why not."""
    import httpx

    try:
        response = httpx.get(
            f"{endpoint.base_url}/v1/models", headers=endpoint.headers, timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return f"does not answer ({type(exc).__name__})"
    if response.status_code == 401:
        return "requires an API key we do not hold"
    if response.status_code != 200:
        return f"answers {response.status_code}"
    return None


def default_gateway(client: Client) -> str:
    """The gateway's default URL on the Anvyl server's host."""
    from anvyl.gateway import DEFAULT_GATEWAY_PORT

    host = client.target.host
    return f"http://{f'[{host}]' if ':' in host else host}:{DEFAULT_GATEWAY_PORT}"


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""
