"""`anvyl run`'s prompt reader (pure): lines, `\"\"\"` blocks, and OpenAI error bodies."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anvyl.cli.chat import MORE, PROMPT, error_message, read_prompt


def typed(*lines: str) -> tuple[Callable[[str], str], list[str]]:
    """A stand-in for `input` returning `lines` in turn; the prompts it was shown."""
    shown: list[str] = []
    queue = list(lines)

    def read(prompt: str) -> str:
        shown.append(prompt)
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read, shown


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["hello there"], "hello there"),
        (['"""one line"""'], "one line"),
        (['"""', "first", "second", '"""'], "first\nsecond"),
        (['"""first', "second", 'third"""'], "first\nsecond\nthird"),
        (['  """', "  indented", '"""  '], "  indented"),
    ],
)
def test_read_prompt(lines: list[str], expected: str) -> None:
    read, shown = typed(*lines)
    assert read_prompt(read) == expected
    assert shown == [PROMPT] + [MORE] * (len(shown) - 1)


def test_an_unclosed_block_ends_with_ctrl_d() -> None:
    read, _ = typed('"""', "never closed")
    with pytest.raises(EOFError):
        read_prompt(read)


def test_error_message() -> None:
    assert error_message('{"error": {"message": "no such model"}}') == "no such model"
    assert error_message('{"error": "busy"}') == "busy"
    assert error_message("Bad Gateway") == "Bad Gateway"
    assert error_message("") == "no details"
