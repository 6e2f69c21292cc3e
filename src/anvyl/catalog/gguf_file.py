"""A GGUF header reader: metadata and tensor table, checked before any tensor is loaded.

MLX's own loader (`mx.load`) reads the tensors, but it fails with terse messages on a file it
cannot handle (or worse, on a truncated one). Reading the header first lets the import refuse
bad input with an actionable message: not a GGUF file, truncated, unsupported quantization.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anvyl.catalog.gguf_quants import BLOCK_LAYOUT
from anvyl.errors import ImportFailed

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml tensor types: id -> name.
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip

SUPPORTED_TYPES = BLOCK_LAYOUT  # type -> (elements per block, bytes per block)

# Metadata value types: id -> struct format for scalars (8: string, 9: array).
_SCALAR_FORMATS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table: name, shape (numpy order), ggml type and byte range."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    nbytes: int | None  # None for types Anvyl cannot size (unsupported)


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file declares before its tensor data."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    @property
    def architecture(self) -> str:
        """The `general.architecture` value, or "" when absent."""
        return str(self.metadata.get("general.architecture", ""))

    def unsupported_types(self) -> dict[str, int]:
        """Tensor types the import cannot convert, with how many tensors use each."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            if t.type_name not in SUPPORTED_TYPES:
                counts[t.type_name] = counts.get(t.type_name, 0) + 1
        return counts

    def expected_size(self) -> int:
        """The least file size holding every (sized) tensor's data."""
        ends = [self.data_offset + t.offset + t.nbytes for t in self.tensors if t.nbytes]
        return max(ends, default=self.data_offset)


class _Reader:
    """Little-endian cursor over a memory map; running off the end means a truncated file."""

    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise EOFError
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise EOFError
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.unpack("<I")
            count = self.unpack("<Q")
            if count > len(self.buf):
                raise ValueError(f"array of {count} elements cannot fit in the file")
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read and check a GGUF file's header; raises ImportFailed with a clear reason."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if size < 4 or f.read(4) != GGUF_MAGIC:
                raise ImportFailed(
                    f"{path.name} is not a GGUF file (no 'GGUF' magic at its start); "
                    "import takes a .gguf file or an MLX model directory"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _parse(buf, path, size)
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from exc
    if header.expected_size() > size:
        raise ImportFailed(
            f"{path.name} is truncated: its tensors need {header.expected_size()} bytes but the "
            f"file has {size}; download or copy it again"
        )
    return header


def _parse(buf: mmap.mmap, path: Path, size: int) -> GGUFHeader:
    r = _Reader(buf)
    r.pos = 4
    try:
        version = r.unpack("<I")
        if version not in (2, 3):
            hint = " (a big-endian file?)" if version > 0xFFFF else ""
            raise ImportFailed(
                f"{path.name} is GGUF version {version}{hint}; only versions 2 and 3 are supported"
            )
        n_tensors = r.unpack("<Q")
        n_kv = r.unpack("<Q")
        if n_tensors > size or n_kv > size:
            raise ValueError("implausible tensor or key count")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"))
        raw_tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > 8:
                raise ValueError(f"tensor {name} has {n_dims} dimensions")
            dims = [r.unpack("<Q") for _ in range(n_dims)]
            ttype = r.unpack("<I")
            offset = r.unpack("<Q")
            raw_tensors.append((name, dims, ttype, offset))
    except EOFError as exc:
        raise ImportFailed(
            f"{path.name} is truncated: the file ends inside its header; download or copy it again"
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{path.name} is not a valid GGUF file: {exc}") from exc

    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    data_offset = (r.pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, dims, ttype, offset in raw_tensors:
        type_name = GGML_TYPE_NAMES.get(ttype, f"type {ttype}")
        n_elements = 1
        for d in dims:
            n_elements *= d
        nbytes = None
        if type_name in SUPPORTED_TYPES:
            block, block_bytes = SUPPORTED_TYPES[type_name]
            nbytes = (n_elements + block - 1) // block * block_bytes
        # GGUF lists dimensions innermost first; numpy order is the reverse.
        tensors.append(TensorInfo(name, tuple(reversed(dims)), type_name, offset, nbytes))
    return GGUFHeader(version, metadata, tensors, data_offset, size)


_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$")


def read_gguf_parts(path: Path) -> tuple[GGUFHeader, list[tuple[Path, GGUFHeader]]]:
    """The header of a GGUF file, or of a split one (`-00001-of-0000N`) with its every part.

    Returns the first part's header listing the tensors of all parts, and each part's own
    header (whose tensor offsets are relative to that part's data).
    """
    first = read_gguf_header(path)
    count = int(first.metadata.get("split.count", 1) or 1)
    if count <= 1:
        return first, [(path, first)]
    m = _SPLIT_RE.match(path.name)
    if not m or int(m.group("part")) != 1:
        raise ImportFailed(
            f"{path.name} is part of a split GGUF file ({count} parts); import its first part, "
            "named ...-00001-of-0000N.gguf"
        )
    names = [f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [n for n in names if not (path.parent / n).is_file()]
    if missing:
        raise ImportFailed(f"split GGUF file incomplete: {', '.join(missing)} not found")
    rest = [(path.parent / n, read_gguf_header(path.parent / n)) for n in names[1:]]
    parts = [(path, first), *rest]
    tensors = [t for _, h in parts for t in h.tensors]
    return replace(first, tensors=tensors), parts
