"""Token budgets: how long a prompt may be and how many tokens a request may generate."""

from __future__ import annotations

from anvyl.modelserver.errors import PromptTooLong


def check_prompt_length(prompt_tokens: int, context_length: int) -> None:
    """Raise `PromptTooLong` unless the prompt leaves room for at least one generated token."""
    if prompt_tokens >= context_length:
        raise PromptTooLong(
            f"The prompt is {prompt_tokens} tokens long, but this model's context length is"
            f" {context_length} tokens; the prompt must be at most {context_length - 1} tokens"
            " to leave room for a reply.",
            param="messages",
        )


def max_new_tokens(
    requested: int | None, prompt_tokens: int, context_length: int, server_limit: int
) -> int:
    """Tokens a request may generate: its ask, capped by the context left and the server limit."""
    check_prompt_length(prompt_tokens, context_length)
    room = context_length - prompt_tokens
    cap = min(room, server_limit)
    return cap if requested is None else max(1, min(requested, cap))
