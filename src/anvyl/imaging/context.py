"""The build context: Dockerfile, entrypoint, wheels, Anvyl's own wheel; and its content hash."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anvyl
from anvyl.imaging.base import BaseImage
from anvyl.imaging.wheels import WheelSet

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same sources make the same wheel bytes
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
MODELSERVER_SCRIPT = "anvyl-modelserver = anvyl.modelserver.__main__:main"


@dataclass(frozen=True)
class BuildContext:
    """An assembled build context and the hash of everything that went into it."""

    path: Path
    content_hash: str
    version: str


def package_dir() -> Path:
    """The directory of the running `anvyl` package (a source checkout or an installed wheel)."""
    return Path(anvyl.__file__).resolve().parent


def package_files(root: Path) -> list[Path]:
    """Every file of the package under `root`, without bytecode or editor leftovers, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                continue
            files.append(Path(dirpath) / name)
    return sorted(files)


def build_anvyl_wheel(dest_dir: Path, *, version: str | None = None) -> Path:
    """A pure-Python wheel of the running `anvyl` package, byte-for-byte reproducible.

    Built straight from the package directory, so it works the same from a source checkout
    (editable install) and from an installed wheel, and needs no build backend or network.
    Dependencies are not declared: the image installs them from its own pinned wheels.
    """
    version = version or anvyl.__version__
    root = package_dir()
    dist_info = f"anvyl-{version}.dist-info"
    wheel_path = dest_dir / f"anvyl-{version}-py3-none-any.whl"
    records: list[str] = []

    def add(zf: zipfile.ZipFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
        info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{arcname},sha256={digest},{len(data)}")

    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path, "w") as zf:
        for file in package_files(root):
            arcname = "anvyl/" + file.relative_to(root).as_posix()
            add(zf, arcname, file.read_bytes())
        add(
            zf,
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: anvyl\nVersion: {version}\n".encode(),
        )
        add(
            zf,
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: anvyl.imaging\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        )
        add(
            zf,
            f"{dist_info}/entry_points.txt",
            f"[console_scripts]\n{MODELSERVER_SCRIPT}\n".encode(),
        )
        record_name = f"{dist_info}/RECORD"
        records.append(f"{record_name},,")
        info = zipfile.ZipInfo(record_name, date_time=_ZIP_DATE)
        info.external_attr = 0o100644 << 16
        zf.writestr(info, "\n".join(records) + "\n")
    return wheel_path


def dockerfile_text() -> bytes:
    """The Dockerfile shipped inside the package (image/Dockerfile in the repository)."""
    return resources.files("anvyl.imaging").joinpath("files/Dockerfile").read_bytes()


def entrypoint_text() -> bytes:
    """The container entrypoint shipped inside the package."""
    return resources.files("anvyl.imaging").joinpath("files/entrypoint.sh").read_bytes()


def source_hash() -> str:
    """A hash of Anvyl's own inputs to the image (package sources, Dockerfile, entrypoint).

    Cheap (no wheels, no base image), so the control plane can tell before every start whether
    the image on an engine runs the same Anvyl code as itself.
    """
    root = package_dir()
    digest = hashlib.sha256()
    digest.update(_sha256_bytes(dockerfile_text()).encode())
    digest.update(_sha256_bytes(entrypoint_text()).encode())
    for file in package_files(root):
        digest.update(f"{file.relative_to(root).as_posix()} ".encode())
        digest.update(_sha256_bytes(file.read_bytes()).encode())
    return digest.hexdigest()


def assemble_context(
    dest: Path, *, base: BaseImage, wheels: WheelSet, ca_bundle: Path | None
) -> BuildContext:
    """Lay out the build context in the empty directory `dest` and hash its inputs."""
    (dest / "Dockerfile").write_bytes(dockerfile_text())
    entrypoint = dest / "entrypoint.sh"
    entrypoint.write_bytes(entrypoint_text())
    entrypoint.chmod(0o755)

    wheel_dir = dest / "wheels"
    wheel_dir.mkdir()
    for wheel in wheels.wheels:
        _link_or_copy(wheel, wheel_dir / wheel.name)
    (wheel_dir / "requirements.txt").write_text("\n".join(wheels.requirements) + "\n")

    version = anvyl.__version__
    build_anvyl_wheel(dest / "dist", version=version)

    ca_dir = dest / "ca"
    ca_dir.mkdir()
    if ca_bundle is not None:
        shutil.copyfile(ca_bundle, ca_dir / "ca-bundle.crt")

    digest = hashlib.sha256()
    digest.update(f"base {base.ref} {base.id}\n".encode())
    for name, sha in sorted(zip((w.name for w in wheels.wheels), wheels.sha256, strict=True)):
        digest.update(f"wheel {name} {sha}\n".encode())
    for file in sorted(p for p in dest.rglob("*") if p.is_file() and p.parent != wheel_dir):
        rel = file.relative_to(dest).as_posix()
        digest.update(f"file {rel} {_sha256_bytes(file.read_bytes())}\n".encode())
    digest.update(
        f"requirements {_sha256_bytes((wheel_dir / 'requirements.txt').read_bytes())}\n".encode()
    )
    return BuildContext(path=dest, content_hash=digest.hexdigest(), version=version)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst` (same file system), copying when linking is not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()
