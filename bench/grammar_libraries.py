"""Benchmark: llguidance against outlines-core on the bundled model's tokenizer (the choice).

For a few JSON schemas: compile time cold (and, for llguidance, rebuilt and copied), mask time
per token along a valid document, and which JSON Schema keywords each library enforces, refuses
by name, or silently ignores. outlines-core is not a dependency: install it into the venv to run
this (`pip install outlines-core`). Prints only; the numbers are in the README.

    .venv/bin/python bench/grammar_libraries.py [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {"type": "object", "properties": {"name": {"type": "string"},
             "age": {"type": "integer", "minimum": 0, "maximum": 150}, "ok": {"type": "boolean"}},
             "required": ["name", "age", "ok"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
             "size": {"type": "string", "enum": ["S", "M", "L"]}}, "required": ["color", "size"]},
    "array": {"type": "object", "properties": {"tags": {"type": "array", "items": {
              "type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 4}},
              "required": ["tags"]},
    "nested": {"type": "object", "properties": {"user": {"type": "object", "properties": {
               "id": {"type": "integer"}, "address": {"type": "object", "properties": {
               "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
               "required": ["city", "zip"]}}, "required": ["id", "address"]}},
               "required": ["user"]},
    "refs": {"$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"},
             "qty": {"type": "integer", "minimum": 1}}, "required": ["sku", "qty"]}},
             "type": "object", "properties": {"items": {"type": "array",
             "items": {"$ref": "#/$defs/Item"}, "maxItems": 3}}, "required": ["items"]},
    "anyof": {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer"},
              {"type": "string", "maxLength": 8}, {"type": "null"}]}}, "required": ["value"]},
}  # fmt: skip
DOCS: dict[str, Any] = {
    "flat": {"name": "Ann", "age": 31, "ok": True},
    "enum": {"color": "red", "size": "M"},
    "array": {"tags": ["a", "bb", "ccc"]},
    "nested": {"user": {"id": 7, "address": {"city": "Paris", "zip": "75001"}}},
    "refs": {"items": [{"sku": "x1", "qty": 2}, {"sku": "y", "qty": 1}]},
    "anyof": {"value": "hi"},
}
KEYWORDS: dict[str, dict[str, Any]] = {
    "uniqueItems": {"type": "array", "uniqueItems": True},
    "not": {"not": {"type": "string"}},
    "if/then": {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
    "contains": {"type": "array", "contains": {"type": "integer"}},
    "dependentRequired": {"type": "object", "dependentRequired": {"a": ["b"]}},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                        {"required": ["a"]}]},
    "patternProperties": {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    "format date-time": {"type": "string", "format": "date-time"},
}  # fmt: skip


def main() -> None:
    """Measure both libraries and print the numbers."""
    import llguidance
    import llguidance.numpy
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        default=Path.home() / ".cache/anvyl-tests/home/models/"
                        "smollm2-135m-instruct-mlx")  # fmt: skip
    model = parser.parse_args().model
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    eos = 2

    def ids(doc: Any) -> list[int]:
        return tok.encode(json.dumps(doc, separators=(",", ":")), add_special_tokens=False).ids

    t0 = time.perf_counter()
    lt = llguidance.LLTokenizer(tok.to_str(), eos_token=eos)
    print(
        f"llguidance {llguidance.get_version()}: bridge {(time.perf_counter() - t0) * 1e3:.0f} ms"
    )
    bits = llguidance.numpy.allocate_token_bitmask(1, lt.vocab_size)
    for name, schema in SCHEMAS.items():
        t0 = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
        matcher = llguidance.LLMatcher(lt, grammar)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        matcher.deep_copy()
        copy = time.perf_counter() - t0
        times = []
        for token in ids(DOCS[name]):
            t0 = time.perf_counter()
            llguidance.numpy.fill_next_token_bitmask(matcher, bits)
            times.append(time.perf_counter() - t0)
            assert matcher.consume_token(token)
        print(
            f"  {name:8s} cold {cold * 1e3:7.2f} ms  copy {copy * 1e3:.3f} ms  mask median"
            f" {statistics.median(times) * 1e6:6.1f} us  max {max(times) * 1e6:8.1f} us"
        )

    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    special = set(tok.get_added_tokens_decoder())
    t0 = time.perf_counter()
    vocab: dict[bytes, list[int]] = {}
    for text, i in tok.get_vocab().items():
        if i != eos and i not in special and all(c in byte_of for c in text):
            vocab.setdefault(bytes(byte_of[c] for c in text), []).append(i)
    ov = outlines_core.Vocabulary(eos, vocab)
    print(f"outlines-core: bridge {(time.perf_counter() - t0) * 1e3:.0f} ms")
    for name, schema in SCHEMAS.items():
        t0 = time.perf_counter()
        guide = outlines_core.Guide(outlines_core.Index(
            build_regex_from_schema(json.dumps(schema), whitespace_pattern=""), ov))  # fmt: skip
        cold = time.perf_counter() - t0
        times = []
        for token in ids(DOCS[name]):
            t0 = time.perf_counter()
            guide.get_tokens()
            times.append(time.perf_counter() - t0)
            guide.advance(token)
        print(
            f"  {name:8s} cold {cold * 1e3:7.1f} ms  mask median"
            f" {statistics.median(times) * 1e6:6.1f} us  max {max(times) * 1e6:8.1f} us"
        )

    print("keywords: llguidance | outlines-core")
    for name, schema in KEYWORDS.items():
        m = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_json_schema(schema),
                                 log_level=0)  # fmt: skip
        lg = f"refused: {m.get_error()[:60]}" if m.is_error() else "enforced"
        try:
            build_regex_from_schema(json.dumps(schema))
            oc = "accepted"
        except Exception as exc:
            oc = f"refused: {str(exc)[:40]}"
        print(f"  {name:18s} {lg:70s} | {oc}")


if __name__ == "__main__":
    main()
