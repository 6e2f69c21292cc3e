"""The one store of deployments' API keys: `ANVYL_HOME/secrets/<deployment id>/api-key`.

`model start` writes a key here, the model server reads it from the file (a read-only mount in
a container, the path itself for a process), and `model ps` and the gateway read it to reach
the server. Never in the database.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KEY_FILE = "api-key"


class ApiKeys:
    """API-key files under `home/secrets`."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def path(self, deployment_id: str) -> Path:
        """The file holding a deployment's key (whether or not it exists)."""
        return self.home / "secrets" / deployment_id / KEY_FILE

    def read(self, deployment_id: str) -> str:
        """A deployment's API key, or "" when it has none."""
        try:
            return self.path(deployment_id).read_text().strip()
        except OSError:
            return ""

    def write(self, deployment_id: str, key: str, *, owner: tuple[int, int] | None = None) -> Path:
        """Write the key readable only by the server's user (mode 0600), or by `owner`.

        `owner` (uid, gid) is the container's user: as root the file and its directory are
        given to it; otherwise it must be world-readable for that user to read the mount.
        """
        path = self.path(deployment_id)
        directory = path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        if owner is None:
            return path
        if os.geteuid() == 0:
            os.chown(path, *owner)
            os.chown(directory, *owner)
            os.chmod(path, 0o400)
            os.chmod(directory, 0o500)
        else:
            os.chmod(path, 0o444)  # the container user differs from ours
            os.chmod(directory, 0o755)
        return path

    def forget(self, deployment_id: str) -> None:
        """Remove a deployment's key."""
        shutil.rmtree(self.path(deployment_id).parent, ignore_errors=True)
