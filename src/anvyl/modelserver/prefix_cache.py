"""Reuse of the KV cache of a shared prompt prefix across requests, within a memory bound.

Multi-turn chat resends the whole conversation each turn. When a sequence finishes, its KV cache
(prompt and generated tokens) is kept, keyed by those tokens, in mlx-lm's `LRUPromptCache` (a
token trie with least-recently-used eviction by count and by bytes). A new request starts from
the longest cached prefix of its prompt and prefills only the rest. Kept caches are copied out
of the batch's cache first, so an entry never pins the whole batch's buffers and its byte count
is what it really holds.
"""

from __future__ import annotations

from typing import Any

# 32 MiB of float16 keys and values hold as many tokens as 64 MiB did in float32 (about 1,400 of
# the bundled model); it counts toward the server's memory whether or not a client comes back.
DEFAULT_MAX_BYTES = 32 * 2**20
DEFAULT_MAX_ENTRIES = 32
MIN_REUSE_TOKENS = 16  # below this, the prefill it saves is not worth a trie lookup and copy
_MODEL_KEY = "model"


class PrefixCache:
    """Finished sequences' KV caches, looked up by the longest common token prefix."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        from mlx_lm.models.cache import LRUPromptCache

        self.max_bytes = max_bytes
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)
        self.hits = 0
        self.reused_tokens = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept caches."""
        return int(self._lru.nbytes)

    def __len__(self) -> int:
        return len(self._lru)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep `cache`, which holds exactly `tokens`, if it fits the bound."""
        import mlx.core as mx

        if len(tokens) < MIN_REUSE_TOKENS or not cache:
            return
        if any(getattr(c, "offset", None) != len(tokens) for c in cache):
            return  # not a plain per-token cache of these tokens: do not guess
        kept = [_detached(c) for c in cache]
        if sum(c.nbytes for c in kept) > self.max_bytes:
            return
        mx.eval([c.state for c in kept])
        self._lru.insert_cache(_MODEL_KEY, list(tokens), kept)

    def fetch(self, prompt: list[int]) -> tuple[list[Any] | None, int]:
        """A cache for the longest kept prefix of `prompt` and that prefix's length.

        The cache is a copy (the entry stays for other requests) and always leaves at least one
        prompt token to process, since the last one must go through the model to sample from.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if len(prompt) <= MIN_REUSE_TOKENS:
            return None, 0
        cache, rest = self._lru.fetch_nearest_cache(_MODEL_KEY, list(prompt))
        if cache is None:
            return None, 0
        reused = len(prompt) - len(rest)
        if reused >= len(prompt):
            if not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, reused - len(prompt) + 1)
            reused = len(prompt) - 1
        if reused < MIN_REUSE_TOKENS:
            return None, 0
        self.hits += 1
        self.reused_tokens += reused
        return cache, reused


def _detached(cache: Any) -> Any:
    """A copy of a per-sequence KV cache that shares no buffer with the batch it came from."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    if not isinstance(cache, KVCache) or cache.keys is None:
        return cache
    out = KVCache()
    n = cache.offset
    out.keys = mx.array(cache.keys[..., :n, :])
    out.values = mx.array(cache.values[..., :n, :])
    out.offset = n
    return out
