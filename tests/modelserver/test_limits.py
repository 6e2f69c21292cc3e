"""Token budgets (`modelserver/limits.py`)."""

from __future__ import annotations

import pytest

from anvyl.modelserver.errors import PromptTooLong
from anvyl.modelserver.limits import check_prompt_length, max_new_tokens


def test_default_is_the_smaller_of_room_and_server_limit() -> None:
    """No ask: as much as the context and the server allow."""
    assert max_new_tokens(None, 10, 100, 2048) == 90
    assert max_new_tokens(None, 10, 8192, 256) == 256


def test_ask_is_capped_by_context_and_server() -> None:
    """An ask is honoured up to both caps."""
    assert max_new_tokens(5, 10, 100, 50) == 5
    assert max_new_tokens(10**9, 10, 100, 50) == 50
    assert max_new_tokens(10**9, 95, 100, 50) == 5


def test_prompt_filling_the_context_names_both_lengths() -> None:
    """A prompt that leaves no room is a 400 that names both numbers."""
    with pytest.raises(PromptTooLong) as info:
        check_prompt_length(600, 512)
    assert "600" in info.value.message and "512" in info.value.message
    assert info.value.status == 400
    assert info.value.body()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(PromptTooLong):
        max_new_tokens(1, 512, 512, 10)
    check_prompt_length(511, 512)
