"""`anvyl-modelserver` / `python -m anvyl.modelserver`: serve one MLX model directory.

On Linux the entry point re-executes itself once with Debian's OpenBLAS preloaded when it is
installed: MLX's CPU wheel bundles the reference BLAS, and OpenBLAS makes float32 matmuls ~30x
faster. `LD_PRELOAD` only takes effect at process start, hence the re-exec.
`ANVYL_NO_OPENBLAS=1` turns this off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from anvyl.modelserver.config import ConfigError, default_env, parse_config
from anvyl.modelserver.startup import STARTED_ENV, TIMELINE

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
)
_REEXEC_MARK = "ANVYL_OPENBLAS_PRELOADED"


def find_openblas(candidates: Sequence[str] = OPENBLAS_CANDIDATES) -> str | None:
    """The first OpenBLAS library present on this machine."""
    return next((path for path in candidates if Path(path).is_file()), None)


def openblas_env(env: Mapping[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to re-exec with, or None when no re-exec is wanted."""
    if platform != "linux" or env.get("ANVYL_NO_OPENBLAS", "") not in ("", "0"):
        return None
    if env.get(_REEXEC_MARK):
        return None
    lib = find_openblas()
    preload = env.get("LD_PRELOAD", "")
    if lib is None or lib in preload.replace(":", " ").split():
        return None
    new = dict(env)
    new["LD_PRELOAD"] = f"{lib} {preload}".strip()
    new[_REEXEC_MARK] = lib
    return new


def _maybe_reexec(argv: Sequence[str]) -> None:
    """Replace this process with one that has OpenBLAS preloaded, if that applies."""
    env = openblas_env(os.environ)
    if env is None:
        return
    env[STARTED_ENV] = repr(TIMELINE.started)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "anvyl.modelserver", *argv], env)


def _setup_logging(debug: bool) -> None:
    """Quiet by default (warnings), everything with ANVYL_DEBUG=1."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        for noisy in ("httpx", "transformers", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, preload OpenBLAS, serve until SIGTERM; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        _maybe_reexec(args)
    env = default_env()
    try:
        config = parse_config(args, env)
    except ConfigError as exc:
        print(f"anvyl-modelserver: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.debug)
    if not (config.model_path / "config.json").is_file():
        print(
            f"anvyl-modelserver: error: {config.model_path} is not an MLX model directory"
            " (no config.json)",
            file=sys.stderr,
        )
        return 2
    from anvyl.modelserver.serve import run

    TIMELINE.mark("imports")
    logging.getLogger("anvyl.modelserver").info(
        "serving %s as %r on %s:%d (health %d), BLAS preload: %s",
        config.model_path,
        config.model_id,
        config.host,
        config.port,
        config.health_port,
        env.get(_REEXEC_MARK) or "none",
    )
    code = run(config)
    if argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Leave without running C++ static destructors.

    MLX's worker threads are still joinable when the interpreter tears down, and destroying them
    aborts the process ("terminate called without an active exception", exit 134) — seen about
    one stop in three after a drain. Every request is finished and every listener closed here.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
