"""Ollama's API: the request models of `/api/chat`, `/api/generate` and `/api/show`, and what
each `options` key does here.

Every `options` key has a stated behaviour: honoured (`HONOURED`), accepted and inert because it
tunes Ollama's own runtime (`INERT`), checked (`num_ctx`: above the loaded context is a 400), or
refused with a 400 naming it (anything else).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

HONOURED = frozenset(
    {"temperature", "top_p", "top_k", "min_p", "num_predict", "stop", "seed", "presence_penalty",
     "frequency_penalty", "repeat_penalty", "repeat_last_n"}
)  # fmt: skip
INERT = frozenset(
    {"num_ctx", "num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap",
     "use_mlock", "low_vram", "f16_kv", "vocab_only", "numa"}
)  # fmt: skip


class Loose(BaseModel):
    """Base: extra fields allowed."""

    model_config = ConfigDict(extra="allow")


class OllamaFunctionCall(Loose):
    """A call's function: name and arguments as an object."""

    name: str
    arguments: dict[str, Any] | str = {}


class OllamaToolCall(Loose):
    """One entry of an assistant message's `tool_calls`."""

    function: OllamaFunctionCall


class OllamaMessage(Loose):
    """One chat message (`tool_name` on tool results, as Ollama sends them)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[Any] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class OllamaRequest(Loose):
    """Fields shared by chat and generate."""

    model: str
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: str | int | float | None = None  # inert: the model stays loaded
    think: bool | str | None = None


class ChatRequest(OllamaRequest):
    """`POST /api/chat`."""

    messages: list[OllamaMessage] = []
    tools: list[dict[str, Any]] | None = None
    # Anvyl's extension (Ollama has none): OpenAI's tool_choice, e.g. "required" to force a call.
    tool_choice: Any = None


class GenerateRequest(OllamaRequest):
    """`POST /api/generate`."""

    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[Any] | None = None


class ShowRequest(Loose):
    """`POST /api/show` (`name` is the older spelling of `model`)."""

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None
