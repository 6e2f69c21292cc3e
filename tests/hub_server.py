"""A local stand-in for the Hugging Face Hub: the API and file endpoints `huggingface_hub` uses.

Serves repositories from folders: `GET /api/models/OWNER/NAME[/revision/REV]` (the listing with
sizes, blob ids and LFS sha256, as `model_info(files_metadata=True)` reads it) and
`GET|HEAD /OWNER/NAME/resolve/REV/FILE` (with Range, ETag and X-Repo-Commit headers). Knobs for
the failure tests: cut a file's body after some bytes, serve other bytes than listed, slow down.
Shared by the catalog, lifecycle and dashboard pull tests (`running` for a `with`, and
`repo_from_model` to serve an MLX model directory as a repository).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_MIN = 1024  # files this big are listed as LFS files (sha256), smaller ones by git blob id
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    """Repositories by id, each a folder; failure knobs per file name."""

    repos: dict[str, Path]
    cut_after: dict[str, int] = field(default_factory=dict)  # file -> bytes, then close
    corrupt: set[str] = field(default_factory=set)  # files served with one byte flipped
    delay_per_chunk: float = 0.0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listing(self, repo: str) -> dict:
        root = self.repos[repo]
        siblings = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False)
            entry = {
                "rfilename": path.relative_to(root).as_posix(),
                "size": len(data),
                "blobId": blob.hexdigest(),
            }
            if len(data) >= LFS_MIN:
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        return {"_id": repo, "id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}


def serve(hub: FakeHub) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a free loopback port; returns it and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._handle(head=True)

        def do_GET(self) -> None:
            self._handle(head=False)

        def _handle(self, *, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            with hub.lock:
                hub.requests.append(f"{self.command} {path} {self.headers.get('Range', '')}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"]:
                repo = "/".join(parts[2:4])
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if len(parts) > 5 and parts[4] == "revision" and parts[5] not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound", "Invalid rev id")
                return self._send(200, json.dumps(hub.listing(repo)).encode(), "application/json")
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                file = hub.repos[repo] / name
                if not file.is_file():
                    return self._error(404, "EntryNotFound", "Entry not found")
                return self._file(file, name, head)
            return self._error(404, "", "Not found")

        def _file(self, file: Path, name: str, head: bool) -> None:
            data = file.read_bytes()
            if name in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0] or 0)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if head:
                return
            limit = hub.cut_after.get(name)
            sent = 0
            for i in range(0, len(body), 64 << 10):
                chunk = body[i : i + (64 << 10)]
                if limit is not None and start + sent + len(chunk) > limit:
                    self.wfile.write(chunk[: max(0, limit - start - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                if hub.delay_per_chunk:
                    time.sleep(hub.delay_per_chunk)  # a slow link, for the cancel test

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, error_code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(code)
            if error_code:
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def running(hub: FakeHub) -> Iterator[str]:
    """The stand-in Hub serving for the `with` block; yields its base URL (for HF_ENDPOINT)."""
    server, url = serve(hub)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def repo_from_model(model_dir: Path, repo_dir: Path) -> Path:
    """A repository folder of an MLX model directory's files (links, no copy, no anvyl.json)."""
    shutil.copytree(
        model_dir,
        repo_dir,
        symlinks=False,
        ignore=shutil.ignore_patterns("anvyl.json"),
        copy_function=lambda src, dst: os.symlink(os.path.realpath(src), dst),
    )
    return repo_dir
