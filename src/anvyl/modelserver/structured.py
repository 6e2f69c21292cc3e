"""From a request to what constrains its output: `response_format` and `tools` become a grammar.

Everything a client asks for here is enforced by the token mask, or refused with a 400 naming
the field: `strict` is accepted and changes nothing (schemas are always enforced), a schema
keyword the grammar library cannot enforce is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.grammar import Grammars, json_schema_grammar, lark_grammar
from anvyl.modelserver.protocol import (
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFormat,
)
from anvyl.modelserver.tools import FORMATS, Function, ToolFormat, tool_grammar

ANY_OBJECT: dict[str, Any] = {"type": "object"}
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def response_grammar(fmt: ResponseFormat | None) -> str | None:
    """The grammar of a `response_format`; None for free text."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_schema_grammar(ANY_OBJECT)
    if fmt.json_schema is None:
        raise InvalidRequest(
            "response_format type 'json_schema' needs a json_schema object with a schema",
            param="response_format.json_schema",
        )
    return json_schema_grammar(fmt.json_schema.schema_)


@dataclass(frozen=True)
class ToolPlan:
    """The tools of one chat request and how the model may call them."""

    fmt: ToolFormat
    functions: list[Function]
    grammar: str  # Lark grammar text for llguidance
    required: bool


def plan_tools(
    request: ChatCompletionRequest, format_name: str, grammars: Grammars | None
) -> ToolPlan | None:
    """The tool plan of a request; None when it declares no tools or `tool_choice` is none."""
    tools = request.tools or []
    choice = request.tool_choice
    names = [t.function.name for t in tools]
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise InvalidRequest(
            f"tool_choice names the function {choice.function.name!r}, which is not among the"
            f" declared tools {names}",
            param="tool_choice",
        )
    if not tools:
        if choice in ("required",) or isinstance(choice, NamedToolChoice):
            raise InvalidRequest("tool_choice needs tools to call", param="tool_choice")
        return None
    if len(set(names)) != len(names):
        raise InvalidRequest("tools declares a function name twice", param="tools")
    if choice == "none":
        return None
    functions = []
    for i, tool in enumerate(tools):
        params = tool.function.parameters or EMPTY_PARAMETERS
        if params.get("type", "object") != "object":
            raise InvalidRequest(
                "a function's parameters must be a JSON schema of type 'object'",
                param=f"tools[{i}].function.parameters",
            )
        if grammars is not None:  # refuses what cannot be enforced, naming the tool
            grammars.compile(json_schema_grammar(params), f"tools[{i}].function.parameters")
        functions.append(Function(tool.function.name, params, tool.function.description))
    if isinstance(choice, NamedToolChoice):
        functions = [f for f in functions if f.name == choice.function.name]
    required = choice == "required" or isinstance(choice, NamedToolChoice)
    parallel = request.parallel_tool_calls is not False and not isinstance(choice, NamedToolChoice)
    fmt = FORMATS[format_name]
    grammar = lark_grammar(tool_grammar(fmt, functions, required=required, parallel=parallel))
    return ToolPlan(fmt, functions, grammar, required)
