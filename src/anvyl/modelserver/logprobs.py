"""Log probabilities of generated tokens, in OpenAI's shapes (chat and text completions).

The engine records, per generated token, its log probability and the `top` most likely
alternatives under the distribution it sampled from (after penalties, `logit_bias` and a
grammar's mask: a constrained token's alternatives are the tokens the grammar allowed).
"""

from __future__ import annotations

from typing import Any

MAX_TOP_LOGPROBS = 20


def token_logprob(tokenizer: Any, logprobs: Any, token: int, top: int) -> dict[str, Any]:
    """One entry of chat `logprobs.content` for `token` sampled from the row `logprobs`."""
    import mlx.core as mx

    chosen = float(logprobs[token].item())
    alternatives: list[dict[str, Any]] = []
    if top > 0:
        ids = mx.argpartition(-logprobs, top - 1)[:top]
        values = logprobs[ids]
        pairs = sorted(zip(ids.tolist(), values.tolist(), strict=True), key=lambda p: -p[1])
        alternatives = [_entry(tokenizer, i, v) for i, v in pairs]
    return _entry(tokenizer, token, chosen) | {"top_logprobs": alternatives}


def _entry(tokenizer: Any, token: int, logprob: float) -> dict[str, Any]:
    """`{token, logprob, bytes}` of one token."""
    text = tokenizer.decode([int(token)])
    return {"token": text, "logprob": max(logprob, -9999.0), "bytes": list(text.encode())}


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """Text completions' `logprobs` object from chat-shaped entries."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }
