"""`anvyl run`'s conversation: stream chat completions over SSE, and the interactive loop.

One `Chat` holds the session's messages and asks an OpenAI-compatible endpoint (a model
server's own port, or the gateway) with `stream: true`, writing each piece of the answer as it
comes. `interact` reads prompts as Ollama's `run` does: `\"\"\"` opens and closes a multi-line
block, `/bye` leaves, `/clear` forgets the conversation, Ctrl-C stops the answer being written
(not the session), Ctrl-D leaves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

BLOCK = '"""'
PROMPT = ">>> "
MORE = "... "
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # between two pieces of an answer: a long prompt on a slow CPU
HELP = (
    "Available commands:\n"
    "  /clear   Forget the conversation so far (the system prompt stays)\n"
    "  /bye     Exit (or Ctrl-D)\n"
    "  /?       This help\n"
    f"Use {BLOCK} to begin and end a multi-line message; Ctrl-C stops an answer.\n"
)


class ChatError(Exception):
    """The endpoint refused the request or answered with an error."""


class Unreachable(ChatError):
    """Nothing answers at the endpoint (the model unloaded, or the address is not ours)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send chat completions: a base URL (no `/v1`) and the bearer key, if any."""

    base_url: str
    api_key: str = ""
    via: str = "model"  # "model" (its own port) or "gateway"

    @property
    def headers(self) -> dict[str, str]:
        """The authorization header when a key is set."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class Chat:
    """A conversation with one model.

    Args:
        model: The model id sent in each request.
        endpoint: Where requests go; `reconnect` replaces it when nothing answers there.
        reconnect: Loads the model again (it may have unloaded while idle) and returns where it
            now answers.
        system: A system prompt kept at the head of the conversation (also after `/clear`).
        extra: More fields of every request (`response_format`, `max_tokens`).
    """

    model: str
    endpoint: Endpoint
    reconnect: Callable[[], Endpoint]
    system: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def ask(self, prompt: str, out: IO[str]) -> str:
        """Send `prompt` with the conversation so far, writing the answer to `out` as it
        comes; the turn is kept only when the answer is complete (Ctrl-C drops it)."""
        import httpx

        turn = [*self.messages, {"role": "user", "content": prompt}]
        body = {"model": self.model, "messages": turn, "stream": True, **self.extra}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        with httpx.Client(timeout=timeout) as http:
            try:
                answer = _write(stream_answer(http, self.endpoint, body), out)
            except Unreachable:
                self.endpoint = self.reconnect()
                answer = _write(stream_answer(http, self.endpoint, body), out)
        self.messages = [*turn, {"role": "assistant", "content": answer}]
        return answer


def _write(pieces: Iterator[str], out: IO[str]) -> str:
    """Write each piece to `out` at once; end with a newline; return the whole text."""
    text: list[str] = []
    try:
        for piece in pieces:
            text.append(piece)
            out.write(piece)
            out.flush()
    finally:
        if text and not text[-1].endswith("\n"):
            out.write("\n")
            out.flush()
    return "".join(text)


def stream_answer(http: httpx.Client, endpoint: Endpoint, body: dict[str, Any]) -> Iterator[str]:
    """The pieces of a streamed chat completion's answer, in order.

    Unreachable when nothing listens there; ChatError with the server's message when it
    refuses or fails. Closing the iterator (Ctrl-C) closes the connection, which stops the
    generation on the server.
    """
    import httpx

    url = f"{endpoint.base_url}/v1/chat/completions"
    try:
        with http.stream("POST", url, json=body, headers=endpoint.headers) as response:
            if response.status_code != 200:
                response.read()
                raise ChatError(f"{response.status_code}: {error_message(response.text)}")
            for line in response.iter_lines():
                data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
                if not data:
                    continue
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise ChatError(error_message(data))
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
    except httpx.ConnectError as exc:
        raise Unreachable(f"nothing answers at {endpoint.base_url}: {exc}") from exc
    except httpx.TransportError as exc:
        raise ChatError(f"the connection to {endpoint.base_url} failed: {exc}") from exc


def error_message(text: str) -> str:
    """The message of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300] or "no details"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return text.strip()[:300]


def read_prompt(read: Callable[[str], str]) -> str:
    """One prompt from `read` (`input`): a line, or a `\"\"\"` block over several lines.

    EOFError (Ctrl-D) and KeyboardInterrupt (Ctrl-C) pass through.
    """
    line = read(PROMPT)
    stripped = line.strip()
    if not stripped.startswith(BLOCK):
        return line
    rest = stripped[len(BLOCK) :]
    if rest.endswith(BLOCK):  # """one line"""
        return rest[: -len(BLOCK)]
    lines = [rest] if rest else []
    while True:
        line = read(MORE)
        if line.rstrip().endswith(BLOCK):
            last = line.rstrip()[: -len(BLOCK)]
            if last:
                lines.append(last)
            return "\n".join(lines)
        lines.append(line)


def interact(chat: Chat, *, read: Callable[[str], str] = input, out: IO[str] | None = None) -> None:
    """The interactive session: read a prompt, stream its answer, until `/bye` or Ctrl-D."""
    out = out or sys.stdout
    err = sys.stderr
    while True:
        try:
            prompt = read_prompt(read)
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:
            err.write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        command = prompt.strip()
        if not command:
            continue
        if command.startswith("/"):
            name = command.split()[0]
            if name in ("/bye", "/exit"):
                return
            if name == "/clear":
                chat.clear()
                err.write("Cleared session context\n")
            elif name in ("/?", "/help"):
                err.write(HELP)
            else:
                err.write(f"Unknown command '{name}'. Type /? for help\n")
            continue
        try:
            chat.ask(prompt, out)
        except KeyboardInterrupt:  # the answer so far ends with a newline already
            err.write("(stopped)\n")
        except ChatError as exc:
            err.write(f"error: {exc}\n")
        out.flush()
