"""Per-request samplers and logits processors for mlx-lm's batch generator.

Seeds: a request with a `seed` samples from its own PRNG stream (`mx.random.key(seed)`, split
once per token), never from MLX's global generator, so the other requests sharing its batch
cannot shift its randomness and it can stay in the batch (mlx_lm.server instead serves seeded
requests one at a time). The same seed, prompt and parameters give the same text. The one caveat:
a batched matmul may differ from a solo one in the last float bits, which could flip a sample
only where two tokens tie to within that rounding.

Unseeded requests with equal (temperature, top_p, top_k, min_p) share one sampler object, so the
generator samples the whole batch in one call; greedy requests use the generator's own greedy
sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Sampler = Callable[[Any], Any]

_shared_samplers: dict[tuple[float, float, int, float], Sampler] = {}

# Below this temperature or top_p a request decodes greedily (argmax), the limit sampling tends
# to. mlx-lm scales the log-probabilities by 1 / temperature, which overflows float32 for the
# tiniest temperatures, and its top-p threshold (top_p times the mass) underflows to 0 for the
# tiniest top_p, dropping every token: at 5e-324 either one sampled a grammar-masked token.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    repetition_penalty: float = 1.0  # 1: off (Ollama's repeat_penalty)
    repetition_context: int = 64  # tokens it looks back (Ollama's repeat_last_n)

    @property
    def greedy(self) -> bool:
        """Whether this is argmax decoding (temperature 0; temperature or top_p below
        `GREEDY_BELOW`)."""
        return self.temperature < GREEDY_BELOW or self.top_p < GREEDY_BELOW


def make_sampler(params: SamplingParams) -> Sampler | None:
    """The sampler for `params`; None means the generator's default (greedy)."""
    if params.greedy:
        return None
    if params.seed is not None:
        return SeededSampler(params)
    key = (params.temperature, params.top_p, params.top_k, params.min_p)
    sampler = _shared_samplers.get(key)
    if sampler is None:
        from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

        sampler = mlx_make_sampler(
            temp=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=params.min_p
        )
        _shared_samplers[key] = sampler
    return sampler


def make_logits_processors(params: SamplingParams, context: int) -> list[Any]:
    """Logits processors for penalties and `logit_bias` (none in the common case)."""
    repetition = params.repetition_penalty != 1.0
    if not (params.presence_penalty or params.frequency_penalty or params.logit_bias or repetition):
        return []
    from mlx_lm.sample_utils import make_logits_processors as mlx_make_processors

    return mlx_make_processors(
        logit_bias=dict(params.logit_bias) or None,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=context,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=context,
        repetition_penalty=params.repetition_penalty if repetition else None,
        repetition_context_size=params.repetition_context,
    )


class SeededSampler:
    """Temperature/top-p/min-p/top-k sampling from a private PRNG stream."""

    def __init__(self, params: SamplingParams) -> None:
        import mlx.core as mx

        assert params.seed is not None
        self._mx = mx
        self._key = mx.random.key(params.seed & 0xFFFF_FFFF_FFFF_FFFF)
        self._inv_temp = 1.0 / params.temperature
        self._top_p = params.top_p
        self._top_k = params.top_k
        self._min_p = params.min_p

    def __call__(self, logprobs: Any) -> Any:
        """Sample one token per row of `logprobs` and advance the stream."""
        mx = self._mx
        keys = mx.random.split(self._key)
        self._key, sub = keys[0], keys[1]
        if 0.0 < self._top_p < 1.0:
            from mlx_lm.sample_utils import apply_top_p

            logprobs = apply_top_p(logprobs, self._top_p)
        if self._min_p > 0.0:
            from mlx_lm.sample_utils import apply_min_p

            logprobs = apply_min_p(logprobs, self._min_p)
        if 0 < self._top_k < logprobs.shape[-1]:
            from mlx_lm.sample_utils import apply_top_k

            logprobs = apply_top_k(logprobs, self._top_k)
        return mx.random.categorical(logprobs * self._inv_temp, key=sub)
