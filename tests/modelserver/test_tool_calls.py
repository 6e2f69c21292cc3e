"""Pure logic of tool calls: format detection, the grammar text and the call parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anvyl.catalog.model_info import read_tool_format
from anvyl.modelserver.tools import FORMATS, CallParser, Function, detect_tool_format, tool_grammar

HERMES_TEXT = (
    '<tool_call>{"name":"f","arguments":{"s":"a}\\"b","n":[1,{"x":2}]}}</tool_call>\n'
    '<tool_call>{"name":"g","arguments":{}}</tool_call>'
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, "generic"),
        ("{{ messages }}", "generic"),
        ("{% for t in tools %}<tool_call>{{ tool_call.name }}</tool_call>{% endfor %}", "hermes"),
        ("[AVAILABLE_TOOLS]{{ tools }}[TOOL_CALLS]", "mistral"),
        ("<|start_header_id|>ipython<|end_header_id|>{{ tools }}", "llama3_json"),
    ],
)
def test_tool_format_is_detected_from_the_template(template: str | None, expected: str) -> None:
    """As mlx-lm's server does: by the markers the template writes."""
    assert detect_tool_format(template) == expected


def test_parser_reads_a_whole_block_of_calls() -> None:
    """Names and raw argument text, escapes and nesting included."""
    parser = CallParser(FORMATS["hermes"])
    parser.feed(HERMES_TEXT)
    calls = parser.finished_calls()
    assert [(c.index, c.name) for c in calls] == [(0, "f"), (1, "g")]
    assert json.loads(calls[0].arguments) == {"s": 'a}"b', "n": [1, {"x": 2}]}
    assert calls[1].arguments == "{}"


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_streamed_pieces_parse_like_the_whole(step: int) -> None:
    """Fed piece by piece, arguments only ever grow and end as in the whole parse."""
    parser = CallParser(FORMATS["hermes"])
    seen: dict[int, str] = {}
    for i in range(0, len(HERMES_TEXT), step):
        parser.feed(HERMES_TEXT[i : i + step])
        for c in parser.calls:
            assert c.arguments.startswith(seen.get(c.index, ""))
            seen[c.index] = c.arguments
    assert [c.arguments for c in parser.finished_calls()] == list(seen.values())


def test_text_is_text_and_a_cut_call_is_not_a_call() -> None:
    """Plain text is decided at its first character; an unfinished call gives no calls."""
    text = CallParser(FORMATS["generic"])
    text.feed("Hello")
    assert text.is_text and text.finished_calls() == []
    cut = CallParser(FORMATS["generic"])
    cut.feed('<tool_call>{"name":"f","arguments":{"a":')
    assert cut.is_text is False and cut.finished_calls() == []


def test_grammar_names_only_the_declared_functions() -> None:
    """Each function's name and schema appear; `required` has no free-text branch."""
    functions = [Function("f", {"type": "object"}), Function("g", {"type": "object"})]
    required = tool_grammar(FORMATS["hermes"], functions, required=True, parallel=True)
    auto = tool_grammar(FORMATS["hermes"], functions, required=False, parallel=False)
    assert '\\"f\\"' in required and '\\"g\\"' in required and "TEXT" not in required
    assert "TEXT" in auto and auto.count("call_0") == 2


def test_catalog_reads_the_tool_format_of_a_model_dir(tmp_path: Path, bundled_model: Path) -> None:
    """The catalog's model info says which format a model's template uses, running or not."""
    assert read_tool_format(bundled_model) == "generic"
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{% if tools %}<tool_call>{% endif %}"})
    )
    assert read_tool_format(tmp_path) == "hermes"
    assert read_tool_format(tmp_path / "missing") is None
