"""The process runtime's log file (tail, follow, rotation) and its supervisor's restart rule."""

from __future__ import annotations

import threading
from pathlib import Path

from anvyl.runtime.base import reach_host, user_url
from anvyl.runtime.process_logs import FileLogStream, rotate, tail_lines
from anvyl.runtime.process_supervisor import restart_limit


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    assert tail_lines(log, 5) == b""
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(10_000)))
    assert tail_lines(log, 2) == b"line 9998\nline 9999\n"
    assert tail_lines(log, 0) == b""
    assert len(tail_lines(log, 20_000).splitlines()) == 10_000


def test_rotate_copies_and_truncates_keeping_the_writer(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "ab", buffering=0) as writer:  # the model server's O_APPEND descriptor
        writer.write(b"x" * 100)
        assert not rotate(log, max_bytes=1000)
        assert rotate(log, max_bytes=10)
        writer.write(b"after\n")
        rotate(log, max_bytes=1)
    assert log.read_bytes() == b""
    assert (tmp_path / "server.log.1").read_bytes() == b"after\n"
    assert (tmp_path / "server.log.2").read_bytes() == b"x" * 100


def test_follow_reads_growth_and_ends_with_the_process(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"a\nb\nc\n")
    alive = threading.Event()
    alive.set()
    stream = iter(FileLogStream(log, follow=True, tail=1, alive=alive.is_set))
    chunks = [next(stream)]  # the tail, read before anything is appended

    def read() -> None:
        for chunk in stream:
            chunks.append(chunk)
            if b"d\n" in b"".join(chunks):
                alive.clear()  # the process ends after writing d

    reader = threading.Thread(target=read)
    reader.start()
    with open(log, "ab") as f:
        f.write(b"d\n")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert b"".join(chunks) == b"c\nd\n"


def test_close_ends_a_followed_stream(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"")
    stream = FileLogStream(log, follow=True, tail=None, alive=lambda: True)
    reader = threading.Thread(target=lambda: list(stream))
    reader.start()
    stream.close()
    reader.join(timeout=5)
    assert not reader.is_alive()


def test_restart_limit() -> None:
    assert restart_limit("on-failure") == 0
    assert restart_limit("on-failure:3") == 3
    assert restart_limit("no") is None and restart_limit("") is None


def test_one_address_rule() -> None:
    assert reach_host("0.0.0.0", "tcp://10.0.0.5:2376", local=False) == "10.0.0.5"
    assert reach_host("0.0.0.0") == "127.0.0.1"
    assert reach_host("::1") == "[::1]"
    assert reach_host("192.168.1.2", "tcp://10.0.0.5:2376", local=False) == "192.168.1.2"
    assert user_url("127.0.0.1", 8080) == "http://localhost:8080"
    assert user_url("0.0.0.0", 8080, "tcp://10.0.0.5:2376", local=False) == "http://10.0.0.5:8080"
