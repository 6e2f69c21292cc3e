"""A SentencePiece BPE tokenizer (GGUF `tokenizer.ggml.model = llama`) as a `tokenizers` one.

Built as transformers' LlamaConverter builds it from a `.model` file: a BPE model over the
pieces, merges ranked by the merged piece's score, byte fallback to `<0xNN>` pieces, spaces as
`▁` and, when the file says so (`add_space_prefix`, Llama/Mistral yes, Gemma no), a `▁`
prepended to the text and after every special token, as llama.cpp's tokenizer does.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, processors

from anvyl.errors import ImportFailed

SPACE = "\u2581"
TOKEN_TYPE_UNKNOWN = 2


def sentencepiece_bpe(metadata: dict[str, Any], tokens: list[Any]) -> Tokenizer:
    """The tokenizer of a GGUF file whose vocabulary is SentencePiece BPE."""
    scores = metadata.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens):
        raise ImportFailed("the GGUF file's SentencePiece vocabulary has no scores per token")
    pieces = [str(t) for t in tokens]
    vocab: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        vocab.setdefault(piece, i)
    unk = _unknown_piece(metadata, pieces)
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=_merges(vocab, [float(s) for s in scores]),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    # A normalizer, not Metaspace: llama.cpp prepends the space even to text starting with one.
    replace = normalizers.Replace(" ", SPACE)
    tokenizer.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPACE), replace]) if prefix else replace
    )
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    post = special_token_processor(metadata, pieces)
    if post is not None:
        tokenizer.post_processor = post
    return tokenizer


def special_token_processor(
    metadata: dict[str, Any], pieces: list[str]
) -> processors.PostProcessor | None:
    """BOS before (and EOS after) each sequence when the file asks for them, else None."""

    def token(key: str) -> tuple[str, int] | None:
        idx = metadata.get(f"tokenizer.ggml.{key}_token_id")
        wanted = metadata.get(f"tokenizer.ggml.add_{key}_token")
        if wanted and isinstance(idx, int) and 0 <= idx < len(pieces):
            return pieces[idx], idx
        return None

    bos, eos = token("bos"), token("eos")
    if bos is None and eos is None:
        return None

    def sequence(name: str, type_id: int) -> str:
        parts = [f"{t[0]}:{type_id}" for t in (bos,) if t] + [f"${name}:{type_id}"]
        return " ".join(parts + [f"{t[0]}:{type_id}" for t in (eos,) if t])

    return processors.TemplateProcessing(
        single=sequence("A", 0),
        pair=f"{sequence('A', 0)} {sequence('B', 1)}",
        special_tokens=[t for t in (bos, eos) if t is not None],
    )


def _unknown_piece(metadata: dict[str, Any], pieces: list[str]) -> str | None:
    idx = metadata.get("tokenizer.ggml.unknown_token_id")
    if isinstance(idx, int) and 0 <= idx < len(pieces):
        return pieces[idx]
    types = metadata.get("tokenizer.ggml.token_type") or []
    return next((pieces[i] for i, t in enumerate(types) if int(t) == TOKEN_TYPE_UNKNOWN), None)


def _merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces, ranked by the piece's score (best first)."""
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, idx in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[idx], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
