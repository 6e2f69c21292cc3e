"""Regenerate the gRPC stubs from `anvyl.proto` with grpcio-tools: `python -m anvyl.api.codegen`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
PROTO = API_DIR / "anvyl.proto"
GENERATED = ("anvyl_pb2.py", "anvyl_pb2.pyi", "anvyl_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on `anvyl.proto` into `out_dir`, with imports fixed to the package path."""
    from grpc_tools import protoc  # dev-only dependency

    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{API_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on anvyl.proto")
    grpc_file = out_dir / "anvyl_pb2_grpc.py"
    # protoc writes a top-level import; the stubs live in the anvyl.api package.
    text = grpc_file.read_text()
    grpc_file.write_text(text.replace("import anvyl_pb2 as", "from anvyl.api import anvyl_pb2 as"))
    return [out_dir / name for name in GENERATED]


def main() -> int:
    """Write fresh stubs next to the proto."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, API_DIR / path.name)
            print(f"wrote {API_DIR / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
