"""Importing transformers without re-reading its 3,000 model files: a cached import structure.

mlx-lm imports transformers (its tokenizers), and transformers' `__init__` builds the table of
its lazily imported names by reading every file under `transformers/models/` for `__all__`
(`define_import_structure`): measured on a loaded 2-core machine, half of the 1.1 s that
`import mlx_lm.utils` takes. The table depends only on the installed files, so it is computed
once and kept as JSON; later starts read it back (a few ms). The file name carries a fingerprint
of the scanned folder and of transformers' own `import_utils.py` (path, size, mtime: no inode,
which an image's layers need not keep), so an upgrade or reinstall computes it anew; an
unreadable or malformed cache is ignored.

Where: `ANVYL_IMPORT_CACHE` (a folder), else `~/.cache/anvyl/import-cache`. The model image
fills its own at build time (`python -m anvyl.modelserver.import_cache`) since its root file
system is read-only when it runs. `ANVYL_IMPORT_CACHE=off` turns the cache off.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("anvyl.modelserver")

CACHE_ENV = "ANVYL_IMPORT_CACHE"
TARGET = "transformers.utils.import_utils"
FORMAT = 1

Structure = dict[frozenset[str], dict[str, set[str]]]


def cache_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """The cache folder, or None when turned off."""
    value = env.get(CACHE_ENV, "")
    if value.lower() in ("off", "0", "false", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "anvyl" / "import-cache"


def encode(structure: Structure) -> list[list[Any]]:
    """The structure as JSON-friendly lists (sorted, so equal structures give equal text)."""
    return [
        [sorted(backends), {module: sorted(names) for module, names in sorted(modules.items())}]
        for backends, modules in sorted(structure.items(), key=lambda item: sorted(item[0]))
    ]


def decode(data: Any) -> Structure:
    """`encode`'s output back to frozensets and sets; ValueError when malformed."""
    if not isinstance(data, list):
        raise ValueError("not a list")
    structure: Structure = {}
    for backends, modules in data:
        if not isinstance(modules, dict):
            raise ValueError("modules are not a mapping")
        structure[frozenset(str(b) for b in backends)] = {
            str(module): {str(n) for n in names} for module, names in modules.items()
        }
    return structure


def _fingerprint(module_path: str, prefix: str | None, source: str) -> str:
    """A name for the structure of `module_path` that changes when the files do."""
    parts = [str(FORMAT), str(module_path), str(prefix)]
    for path in (module_path, source):
        st = os.stat(path)
        parts += [str(path), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def cached(define: Callable[..., Structure], folder: Path, source: str) -> Callable[..., Structure]:
    """`define_import_structure` that reads its answer from `folder` when it can."""
    memo: dict[tuple[str, str | None], Structure] = {}

    def define_import_structure(module_path: Any, prefix: str | None = None) -> Structure:
        key = (str(module_path), prefix)
        if key in memo:
            return memo[key]
        try:
            target = folder / f"transformers-{_fingerprint(str(module_path), prefix, source)}.json"
        except OSError:
            return define(module_path, prefix)
        try:
            structure = decode(json.loads(target.read_text()))
        except (OSError, ValueError, TypeError):
            structure = define(module_path, prefix)
            _write(target, encode(structure))
        memo[key] = structure
        return structure

    define_import_structure.uncached = define  # type: ignore[attr-defined]
    return define_import_structure


def _write(target: Path, data: Any) -> None:
    """Write `data` as JSON to `target` atomically; a read-only place is not an error."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # the model image's user reads what its build wrote
        os.replace(tmp, target)
    except OSError as exc:
        log.debug("import cache not written to %s: %s", target.parent, exc)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `transformers.utils.import_utils` as usual and wraps its scan once executed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The usual spec of the target module, with an exec step that installs the cache."""
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # once is enough
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or spec.origin is None:
            return spec
        loader, folder, origin = spec.loader, self.folder, spec.origin
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            define = getattr(module, "define_import_structure", None)
            if callable(define):
                module.define_import_structure = cached(define, folder, origin)  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(folder: Path | None = None) -> bool:
    """Serve transformers' import structure from the cache; False when that cannot apply
    (turned off, or transformers already imported)."""
    folder = folder if folder is not None else cache_dir()
    if folder is None or "transformers" in sys.modules or TARGET in sys.modules:
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(folder))
    return True


def main() -> int:
    """Fill the cache (the model image runs this at build time)."""
    install()
    import mlx_lm.utils  # noqa: F401  (imports transformers, which fills the cache)

    print(f"anvyl: import cache in {cache_dir()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
