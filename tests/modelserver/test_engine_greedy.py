"""Speed work must not change what the engine generates: greedy ids against a recorded reference.

`greedy_reference.json` was recorded by `greedy_ids.py --record` from the engine before any of
the speed changes of issue 6 (mlx-lm's BatchGenerator, weights as loaded). Every prompt is
checked alone and in one batch with all the others, in float32 and in the quantized weights as
stored through MLX's own matmul. "kernel" (the same quantized weights through Anvyl's CPU kernel,
the CPU default when installed) was recorded when the kernel landed; its ids equal float32's (the
kernel computes the float32 path's numbers, summed in another order). The script runs in a
subprocess so that OpenBLAS is preloaded as in the real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anvyl.modelserver.__main__ import find_openblas
from anvyl.modelserver.kernel import load_kernels

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "greedy_ids.py"
REFERENCE = json.loads((HERE / "greedy_reference.json").read_text())

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def current_ids(bundled_model: Path) -> dict[str, dict[str, dict[str, list[int]]]]:
    """Greedy ids of today's engine, every dtype, solo and batched."""
    if find_openblas() is None:
        pytest.skip("the reference was recorded with OpenBLAS, which is not installed here")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(bundled_model)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert data["max_tokens"] == REFERENCE["max_tokens"]
    return data["ids"]


@pytest.mark.parametrize("dtype", sorted(REFERENCE["ids"]))
@pytest.mark.parametrize("mode", ["solo", "batch"])
def test_greedy_ids_unchanged(
    current_ids: dict[str, dict[str, dict[str, list[int]]]], dtype: str, mode: str
) -> None:
    """Every prompt yields exactly the recorded token ids."""
    if dtype == "kernel" and load_kernels() is None:
        pytest.skip("anvyl_kernels is not installed (scripts/setup.sh builds it)")
    expected = REFERENCE["ids"][dtype][mode]
    got = current_ids[dtype][mode]
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], f"{dtype}/{mode}/{name} changed"


def test_reference_answers_paris() -> None:
    """The reference itself is sane: the Paris question is answered (ids of ' Paris')."""
    solo = REFERENCE["ids"]["float32"]["solo"]
    assert solo["paris"] == REFERENCE["ids"]["quantized"]["solo"]["paris"]
    assert REFERENCE["ids"]["kernel"] == REFERENCE["ids"]["float32"]
    assert len(solo["count"]) == REFERENCE["max_tokens"]
