"""Hugging Face tokenizer files rebuilt from a GGUF file's `tokenizer.ggml.*` metadata."""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from anvyl.errors import ImportFailed

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) -> the split regex before byte-level BPE.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = _LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_GPT4O_PATTERN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_PATTERN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
    **dict.fromkeys(("llama-bpe", "llama3", "smaug-bpe", "falcon3", "dbrx"), _LLAMA3_PATTERN),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_PATTERN),
    "gpt-4o": _GPT4O_PATTERN,
    "tekken": _TEKKEN_PATTERN,
}
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2 = {"gpt2", "default", "gpt-2", "phi-2", "olmo", "jais"}
PRE_TOKENIZERS = tuple(sorted({*_SPLITS, *_DIGITS_THEN_GPT2, *_GPT2}))


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """The file's tokenizer: byte-level BPE (`gpt2`) or SentencePiece BPE (`llama`)."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ImportFailed("the GGUF file has no tokenizer.ggml.tokens to build a tokenizer")
    if model == "gpt2":
        tokenizer = _byte_level_bpe(metadata, tokens)
    elif model == "llama":
        from anvyl.catalog.tokenizer_spm import sentencepiece_bpe

        tokenizer = sentencepiece_bpe(metadata, tokens)
    else:
        raise ImportFailed(
            f"unsupported tokenizer {model!r}: Anvyl imports GGUF files with a byte-level BPE "
            "('gpt2') or SentencePiece ('llama') tokenizer; convert other models from their "
            "Hugging Face weights with mlx_lm.convert"
        )
    _add_special_tokens(tokenizer, metadata, tokens)
    return tokenizer


def _byte_level_bpe(metadata: dict[str, Any], tokens: list[Any]) -> Tokenizer:
    merges = metadata.get("tokenizer.ggml.merges")
    if not isinstance(merges, list):
        raise ImportFailed("the GGUF file has no tokenizer.ggml.merges for its BPE tokenizer")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(str(tok), i)
    pairs: list[tuple[str, str]] = []
    for m in merges:
        left, sep, right = str(m).partition(" ")
        if sep:
            pairs.append((left, right))
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    )
    tokenizer.pre_tokenizer = _pre_tokenizer(str(metadata.get("tokenizer.ggml.pre", "default")))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = _post_processor(metadata, tokens)
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer, metadata: dict[str, Any], tokens: list[Any]) -> None:
    types = metadata.get("tokenizer.ggml.token_type") or []
    special = [
        AddedToken(str(tokens[i]), special=True, normalized=False)
        for i, t in enumerate(types)
        if int(t) == TOKEN_TYPE_CONTROL
    ]
    user = [
        AddedToken(str(tokens[i]), special=False, normalized=False)
        for i, t in enumerate(types)
        if int(t) == TOKEN_TYPE_USER_DEFINED
    ]
    if special:
        tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)


def tokenizer_config(metadata: dict[str, Any], context_length: int | None) -> dict[str, Any]:
    """The tokenizer_config.json: special tokens, BOS handling and the chat template."""
    tokens = metadata.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str | None:
        idx = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if isinstance(idx, int) and 0 <= idx < len(tokens):
            return str(tokens[idx])
        return None

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
    }
    for key in ("bos", "eos", "unk", "pad"):
        if (value := token(key)) is not None:
            config[f"{key}_token"] = value
    if context_length:
        config["model_max_length"] = context_length
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template:
        config["chat_template"] = template
    return config


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    if pre in _SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre in _GPT2:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raise ImportFailed(
        f"unsupported pre-tokenizer {pre!r} (tokenizer.ggml.pre); Anvyl knows "
        f"{', '.join(PRE_TOKENIZERS)}"
    )


def _post_processor(metadata: dict[str, Any], tokens: list[Any]) -> processors.PostProcessor:
    from anvyl.catalog.tokenizer_spm import special_token_processor

    post = special_token_processor(metadata, [str(t) for t in tokens])
    return post if post is not None else processors.ByteLevel(trim_offsets=False)
