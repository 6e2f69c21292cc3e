"""`anvyl image build` as a user runs it: the server builds; the CLI opens no engine connection."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fixtures_control_plane import Served, start_serve
from helpers import imaging_cache_dir

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # the CLI must not need one


def _one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_input_is_refused_by_the_server(served: Served, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    refused = served.cli("image", "build", "--ca-bundle", str(not_pem), env=NO_ENGINE)
    _one_line_error(refused, "holds no PEM certificate")
    unknown = served.cli("image", "build", "--host-id", "nope", env=NO_ENGINE)
    _one_line_error(unknown, "no host with id or name 'nope'")
    bad_tag = served.cli("image", "build", "--tag", "Not/Valid:tag", env=NO_ENGINE)
    _one_line_error(bad_tag, "invalid --tag 'Not/Valid:tag'")


def test_without_a_server_nothing_is_built(served: Served) -> None:
    result = served.cli("image", "build", env={**NO_ENGINE, "ANVYL_ADDR": "127.0.0.1:1"})
    assert result.returncode == 2, result
    assert "127.0.0.1:1" in result.stderr and "Docker" not in result.stderr


def test_an_up_to_date_image_is_kept(
    tmp_path_factory: pytest.TempPathFactory, modelserver_image: str
) -> None:
    home = tmp_path_factory.mktemp("anvyl-home")
    (home / "cache").symlink_to(imaging_cache_dir())  # the build inputs the fixture made
    server = start_serve(home)
    try:
        built = server.cli(
            "image", "build", "--base-image", "debian-bootstrap", "--tag", modelserver_image,
            env=NO_ENGINE, timeout=600,
        )  # fmt: skip
    finally:
        server.stop()
    assert built.returncode == 0, built.stderr
    assert f"Image {modelserver_image} is up to date" in built.stdout, built.stdout
    assert f"✓ {modelserver_image}" in built.stdout
