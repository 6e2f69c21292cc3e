"""Hugging Face tokenizer files rebuilt from a GGUF file's `tokenizer.ggml.*` metadata."""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from anvyl.errors import ImportFailed

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) grouped by the split they use.
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_LLAMA3 = {"llama-bpe", "llama3", "smaug-bpe", "falcon3"}
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """A byte-level BPE tokenizer from GGUF tokens and merges, control tokens kept special."""
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ImportFailed(
            f"unsupported tokenizer {model!r}: Anvyl imports GGUF files with a byte-level BPE "
            "('gpt2') tokenizer; convert other models from their Hugging Face weights with "
            "mlx_lm.convert"
        )
    tokens = metadata.get("tokenizer.ggml.tokens")
    merges = metadata.get("tokenizer.ggml.merges")
    if not isinstance(tokens, list) or not tokens or not isinstance(merges, list):
        raise ImportFailed("the GGUF file has no tokenizer.ggml.tokens/merges to build a tokenizer")
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
    return tokenizer


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
    if pre in _LLAMA3:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    # GPT-2's own split: "gpt2", "default" and anything llama.cpp did not name.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _post_processor(metadata: dict[str, Any], tokens: list[Any]) -> processors.PostProcessor:
    bos_id = metadata.get("tokenizer.ggml.bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token") and isinstance(bos_id, int):
        bos = str(tokens[bos_id])
        return processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, bos_id)],
        )
    return processors.ByteLevel(trim_offsets=False)
