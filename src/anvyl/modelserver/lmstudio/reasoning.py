"""Reasoning in LM Studio's SDK fragments: each fragment says whether it is reasoning.

LM Studio parses a reasoning block (`llm.prediction.reasoning.parsing`: on, between `<think>`
and `</think>`, by default) and types every fragment: `reasoningStartTag` and `reasoningEndTag`
for the tags themselves, `reasoning` inside, `none` outside. The text is passed whole (the SDK's
`result.content` is every fragment joined, tags included), only typed. As on Anvyl's other
APIs, a block counts when the output opens it first (after whitespace) or when the prompt
opened it (the chat template wrote `<think>`); a tag split across tokens is held back until it
is whole.
"""

from __future__ import annotations

from typing import Any

from anvyl.modelserver.lmstudio.protocol import ReasoningType, fragment
from anvyl.modelserver.lmstudio.tooling import ToolEvents
from anvyl.modelserver.thinking import CLOSE, OPEN, held_prefix

Typed = tuple[ReasoningType, str]


class FragmentTyper:
    """Types generated text as it arrives, for LM Studio's `fragment` messages.

    Args:
        inside: The prompt opened the start tag: the output starts inside the reasoning.
        start: The tag that opens reasoning; `end`: the one that closes it.
    """

    def __init__(self, *, inside: bool = False, start: str = OPEN, end: str = CLOSE) -> None:
        self._state = "reasoning" if inside else "start"
        self._held = ""
        self.start, self.end = start, end

    def feed(self, piece: str) -> list[Typed]:
        """The typed pieces of text that `piece` settles, in order (nothing is dropped)."""
        self._held += piece
        out: list[Typed] = []
        while self._held:
            held = self._held
            if self._state == "start":
                lead = len(held) - len(held.lstrip())
                rest = held[lead:]
                if rest.startswith(self.start):
                    _add(out, "none", held[:lead])
                    _add(out, "reasoningStartTag", self.start)
                    self._state, self._held = "reasoning", rest[len(self.start) :]
                    continue
                if self.start.startswith(rest):  # nothing yet, or a beginning of the tag
                    return out
                self._state = "answer"
            elif self._state == "reasoning":
                at = held.find(self.end)
                if at >= 0:
                    _add(out, "reasoning", held[:at])
                    _add(out, "reasoningEndTag", self.end)
                    self._state, self._held = "answer", held[at + len(self.end) :]
                    continue
                keep = held_prefix(held, self.end)
                _add(out, "reasoning", held[: len(held) - keep])
                self._held = held[len(held) - keep :]
                return out
            else:
                _add(out, "none", held)
                self._held = ""
        return out

    def flush(self) -> list[Typed]:
        """What was held back, once the generation is over."""
        held, self._held = self._held, ""
        out: list[Typed] = []
        _add(out, "reasoning" if self._state == "reasoning" else "none", held)
        return out


def _add(out: list[Typed], kind: ReasoningType, text: str) -> None:
    if text:
        out.append((kind, text))


class Fragments:
    """Generated text → the SDK's messages: typed `fragment`s (the tokens each came from
    counted) and, outside the reasoning, tool-call messages.

    Args:
        typer: Types reasoning (None: reasoning parsing is off, all text is `none`).
        tools: Parses tool calls out of the answer (None: no tools).
    """

    def __init__(self, typer: FragmentTyper | None, tools: ToolEvents | None) -> None:
        self.typer, self.tools = typer, tools
        self._owed = 0  # tokens whose text has not been sent yet

    def feed(self, text: str, tokens: int) -> list[dict[str, Any]]:
        """The messages for newly generated `text`, made of `tokens` tokens."""
        self._owed += tokens
        typed: list[Typed] = self.typer.feed(text) if self.typer else [("none", text)]
        return self._messages(typed)

    def end(self) -> list[dict[str, Any]]:
        """The messages for what was held back, once the generation is over."""
        out = self._messages(self.typer.flush() if self.typer else [])
        leftover = self.tools.leftover() if self.tools is not None else ""
        if leftover:
            out.append(self._fragment(leftover, "none"))
        return out

    def _messages(self, typed: list[Typed]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for kind, text in typed:
            calls: list[dict[str, Any]] = []
            if kind == "none" and self.tools is not None:
                text, calls = self.tools.feed(text)
            if text:
                out.append(self._fragment(text, kind))
            out += calls
        return out

    def _fragment(self, text: str, kind: ReasoningType) -> dict[str, Any]:
        tokens, self._owed = self._owed, 0
        return fragment(text, kind, tokens)
