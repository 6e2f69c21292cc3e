"""Tool calls: the call formats, their grammar, and a parser shared by streaming and whole answers.

A model writes calls in the format its chat template knows (detected from the template, as
mlx-lm's server does); a template without tools gets Anvyl's generic format, which is Hermes'
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` with the tool schemas put in the
system prompt (see `tool_prompt.py`). Whatever the format, the output is constrained: the name
to the declared functions (or the one named by `tool_choice`), the arguments to that function's
parameter schema, compact JSON, the name first. So parsing is exact, and a stream is parsed by
the same code as a whole answer (the assembled stream equals the non-streamed response).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from anvyl.modelserver.grammar import lark_json

TOOL_FORMATS = ("hermes", "llama3_json", "mistral", "generic")
# Calls in one answer: at most this many, and at most as many as functions were declared (a
# small model repeats a call for as long as the grammar lets it).
MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class ToolFormat:
    """How a model writes a block of tool calls."""

    name: str
    native: bool  # the chat template renders the tools itself
    block_start: str = ""
    call_start: str = ""
    call_end: str = ""
    separator: str = ""
    block_end: str = ""
    args_key: str = "arguments"
    parallel: bool = True


FORMATS = {
    "hermes": ToolFormat("hermes", True, call_start="<tool_call>", call_end="</tool_call>",
                         separator="\n"),
    "generic": ToolFormat("generic", False, call_start="<tool_call>", call_end="</tool_call>",
                          separator="\n"),
    "mistral": ToolFormat("mistral", True, block_start="[TOOL_CALLS][", separator=",",
                          block_end="]"),
    "llama3_json": ToolFormat("llama3_json", True, args_key="parameters", parallel=False),
}  # fmt: skip


def detect_tool_format(chat_template: str | None) -> str:
    """The tool-call format a chat template uses; `generic` when it knows no tools."""
    template = chat_template if isinstance(chat_template, str) else ""
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<tool_call>" in template:
        return "hermes"
    if "<|python_tag|>" in template or ("ipython" in template and "tools" in template):
        return "llama3_json"
    return "generic"


@dataclass(frozen=True)
class Function:
    """One declared function tool."""

    name: str
    parameters: dict[str, Any]
    description: str | None = None


def tool_grammar(
    fmt: ToolFormat, functions: list[Function], *, required: bool, parallel: bool
) -> str:
    """A Lark grammar: a block of calls to `functions`, or (unless `required`) plain text."""
    lines = []
    alternatives = []
    for i, function in enumerate(functions):
        head = f'{fmt.call_start}{{"name":{_dump(function.name)},"{fmt.args_key}":'
        lines.append(f"args_{i}: {lark_json(function.parameters)}")
        lines.append(f"call_{i}: {_literal(head)} args_{i} {_literal('}' + fmt.call_end)}")
        alternatives.append(f"call_{i}")
    lines.append("call: " + " | ".join(alternatives))
    calls = "call"
    if parallel and fmt.parallel:
        more = f"({_literal(fmt.separator)} call)?" if fmt.separator else "call?"
        limit = min(MAX_PARALLEL_CALLS, len(functions))
        calls = " ".join(["call"] + [more] * (limit - 1))
    block = " ".join(p for p in (_literal(fmt.block_start), calls, _literal(fmt.block_end)) if p)
    if required:
        lines.insert(0, f"start: {block}")
    else:
        first = (fmt.block_start + fmt.call_start + "{")[0]
        lines.insert(0, f"start: {block} | TEXT")
        lines.append(f"TEXT: /[^{_class_char(first)}][\\s\\S]*/")
    return "\n".join(lines)


def _dump(value: str) -> str:
    """Compact JSON for a string, as the grammar writes it."""
    return json.dumps(value, ensure_ascii=False)


def _literal(text: str) -> str:
    """A Lark string literal for `text` ('' when empty)."""
    return json.dumps(text, ensure_ascii=False) if text else ""


def _class_char(char: str) -> str:
    """`char` escaped for a regex character class."""
    return "\\" + char if char in "\\]^-[" else char


# ---------------------------------------------------------------------------------- parsing


@dataclass
class ParsedCall:
    """One call as parsed so far."""

    index: int
    id: str
    name: str | None = None
    arguments: str = ""
    complete: bool = False


@dataclass
class CallParser:
    """Parses a block of calls from text that grows (a stream) or is whole."""

    fmt: ToolFormat
    text: str = ""
    calls: list[ParsedCall] = field(default_factory=list)
    is_text: bool | None = None  # None until the first characters decide

    def feed(self, piece: str) -> None:
        """Add generated text and re-parse (outputs are short; parsing is linear)."""
        self.text += piece
        self._parse()

    def _parse(self) -> None:
        """Update `is_text` and `calls` from `self.text`."""
        fmt, text = self.fmt, self.text
        opening = fmt.block_start + fmt.call_start + "{"
        if self.is_text is None:
            if not text:
                return
            if not opening.startswith(text[: len(opening)]):
                self.is_text = True
            elif len(text) >= len(opening):
                self.is_text = False
            else:
                return
        if self.is_text:
            return
        pos = len(fmt.block_start)
        index = 0
        while True:
            head = fmt.call_start + '{"name":'
            if not text.startswith(head, pos):
                return
            name, after = _string_at(text, pos + len(head))
            if index == len(self.calls):
                self.calls.append(ParsedCall(index, new_call_id()))
            call = self.calls[index]
            if name is None:
                return
            call.name = name
            key = f',"{fmt.args_key}":'
            if not text.startswith(key, after):
                return
            start = after + len(key)
            end = _json_end(text, start)
            call.arguments = text[start : end if end is not None else len(text)]
            if end is None:
                return
            close = "}" + fmt.call_end
            if not text.startswith(close, end):
                return
            call.complete = True
            pos = end + len(close)
            if fmt.separator and text.startswith(fmt.separator, pos):
                pos += len(fmt.separator)
            index += 1

    def finished_calls(self) -> list[ParsedCall]:
        """The calls, when the text is a complete block of calls; else []."""
        if self.is_text is not False or not self.calls:
            return []
        return self.calls if all(c.complete for c in self.calls) else []


def new_call_id() -> str:
    """A fresh tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _string_at(text: str, pos: int) -> tuple[str | None, int]:
    """The JSON string starting at `pos` and the index after it; (None, pos) if incomplete."""
    end = _json_end(text, pos)
    if end is None:
        return None, pos
    return json.loads(text[pos:end]), end


def _json_end(text: str, pos: int) -> int | None:
    """The index just after the JSON value (object, array or string) at `pos`; None if open."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(pos, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
