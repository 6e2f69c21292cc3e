"""Reasoning in `<think>...</think>` tags (Qwen3, QwQ, DeepSeek-R1 distills), split from the answer.

Two conventions exist. A chat template may open the tag itself (DeepSeek-R1's generation prompt
ends with `<think>\\n`): the output starts inside the reasoning. Or the model writes the opening
tag as its first words (Qwen3): the output starts with `<think>`. Either way everything up to
`</think>` is reasoning and the rest is the answer; a generation cut off before `</think>` is all
reasoning. Whitespace around the reasoning and at the start of the answer is dropped, as
llama.cpp's server and vLLM do.

`ThinkSplitter` works on a stream: a tag may arrive split across tokens (`</`, `think`, `>`), so
text that could still be the start of a tag is held back until the next piece decides it. Told
how many generated tokens each piece came from, it also counts the reasoning tokens: every token
from the first of the output (or of `<think>`) to the one that completes `</think>`, the tags
included (what OpenAI's `reasoning_tokens` count: generated, not part of the answer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"
Kind = Literal["thinking", "text"]
Part = tuple[Kind, str]


def opens_thinking(prompt_tail: str) -> bool:
    """Whether a rendered prompt ends inside an opened `<think>` (the template opened it)."""
    tail = prompt_tail.rstrip()
    return tail.endswith(OPEN)


def held_prefix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkSplitter:
    """Splits generated text into reasoning and answer as it arrives.

    Args:
        inside: The prompt opened `<think>` (see `opens_thinking`): the output starts inside
            the reasoning. Otherwise the output is reasoning only if it starts with `<think>`.
    """

    def __init__(self, *, inside: bool = False) -> None:
        self._state = "lead" if inside else "start"
        self._held = ""
        self.thinking = ""  # everything split off as reasoning so far
        self.text = ""  # everything passed on as answer so far
        self.reasoning_tokens = 0  # generated tokens of the reasoning, tags included
        self._undecided = 0  # tokens fed while it is not known whether `<think>` opens
        self._opened = inside  # the output is reasoning first

    def feed(self, piece: str, tokens: int = 0) -> list[Part]:
        """The reasoning and answer parts that `piece` (made of `tokens` generated tokens)
        settles (in order)."""
        before = self._state
        out = self._split(piece)
        if before == "start":
            self._undecided += tokens
            if self._state == "start":
                return out
            tokens, self._undecided = self._undecided, 0
            before = "lead" if self._opened else "answer"
        if before in ("lead", "thinking"):  # the reasoning was open when this piece came
            self.reasoning_tokens += tokens
        return out

    def _split(self, piece: str) -> list[Part]:
        self._held += piece
        out: list[Part] = []
        while True:
            held = self._held
            if self._state == "start":
                stripped = held.lstrip()
                if stripped.startswith(OPEN):
                    self._state, self._held = "lead", stripped[len(OPEN) :]
                    self._opened = True
                    continue
                if OPEN.startswith(stripped):  # nothing yet, or a beginning of `<think>`
                    return out
                self._state = "answer"
            elif self._state == "lead":  # whitespace after `<think>`
                self._held = held.lstrip()
                if not self._held:
                    return out
                self._state = "thinking"
            elif self._state == "thinking":
                end = held.find(CLOSE)
                if end >= 0:
                    self._emit(out, "thinking", held[:end].rstrip())
                    self._state, self._held = "after", held[end + len(CLOSE) :]
                    continue
                keep = held_prefix(held, CLOSE)
                body = held[: len(held) - keep]
                sure = body.rstrip()  # trailing whitespace waits: it may precede `</think>`
                self._emit(out, "thinking", sure)
                self._held = held[len(sure) :]
                return out
            elif self._state == "after":  # whitespace between `</think>` and the answer
                self._held = held.lstrip()
                if not self._held:
                    return out
                self._state = "answer"
            else:
                self._emit(out, "text", held)
                self._held = ""
                return out

    def end(self) -> list[Part]:
        """What was held back, once the generation is over."""
        held, self._held = self._held, ""
        out: list[Part] = []
        if self._state == "start":
            self._emit(out, "text", held)
        elif self._state == "thinking":
            self._emit(out, "thinking", held.rstrip())
        elif self._state == "answer":
            self._emit(out, "text", held)
        return out

    def _emit(self, out: list[Part], kind: Kind, text: str) -> None:
        if not text:
            return
        if kind == "thinking":
            self.thinking += text
        else:
            self.text += text
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))


def split_whole(text: str, *, inside: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a finished generation."""
    splitter = ThinkSplitter(inside=inside)
    splitter.feed(text)
    splitter.end()
    return splitter.thinking, splitter.text


def split_pieces(
    pieces: Iterable[tuple[str, int]], *, inside: bool = False
) -> tuple[str, str, int]:
    """(reasoning, answer, reasoning tokens) of a finished generation, given as its pieces of
    text and how many generated tokens each came from."""
    splitter = ThinkSplitter(inside=inside)
    for text, tokens in pieces:
        splitter.feed(text, tokens)
    splitter.end()
    return splitter.thinking, splitter.text, splitter.reasoning_tokens
