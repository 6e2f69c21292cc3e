"""`anvyl run MODEL [PROMPT]`: loads a stopped model through the control plane and chats.

A real `anvyl serve --runtime process` with its gateway off (the run needs only the gRPC API)
and the bundled model; the interactive session runs on a pseudo-terminal. What the model was
sent is read from its server's own counters (`anvyl_prompt_tokens_total`): a tiny model's
words prove nothing, the prompt's length does.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from fixtures_control_plane import ANVYL, Served
from helpers import free_port, wait_for
from models_harness import MODEL_ID, deployments, failed, make_home, ok, serve_models, stop_all

RUN_TIMEOUT_S = 240.0  # the first run loads the model: slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[Served]:
    """`anvyl serve --runtime process`, no gateway; its deployments stopped after."""
    home = make_home(tmp_path_factory.mktemp("anvyl-run"), bundled_model)
    args = ("--runtime", "process", "--gateway-port", "0", "--ollama-port", "0")
    args += ("--keep-alive", "30m")  # no unload while the module runs
    server = serve_models(home, run_labels, args=args)
    try:
        yield server
    finally:
        try:
            stop_all(server)
        finally:
            server.stop()


def run(
    served: Served, *args: str, stdin: str = "", **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """`anvyl run ARGS` with `stdin` piped in (an empty pipe when none is given)."""
    env = {**os.environ, "ANVYL_ADDR": served.address, **served.env, **env_vars}
    env.pop("ANVYL_DEBUG", None)
    return subprocess.run(
        [ANVYL, "run", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def metric(served: Served, name: str) -> float:
    """One unlabelled metric of the model's server."""
    (d,) = [d for d in deployments(served) if d["model_id"] == MODEL_ID]
    metrics = httpx.get(f"{d['url']}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert match, metrics
    return float(match.group(1))


def prompt_tokens(served: Served) -> float:
    """The model server's count of prompt tokens it was sent (loading the model first)."""
    if not deployments(served):
        ok(run(served, MODEL_ID, "Hi", "--max-tokens", "1"))
    return metric(served, "anvyl_prompt_tokens_total")


def test_run_with_a_prompt_loads_the_model_and_prints_the_answer(served: Served) -> None:
    result = ok(run(served, MODEL_ID, "What is the capital of France?", "--max-tokens", "8"))
    assert result.stdout.strip(), result.stderr
    assert result.stdout.endswith("\n")
    (d,) = deployments(served)
    assert d["model_id"] == MODEL_ID and d["on_demand"] and d["state"] == "ready"


def test_run_reads_the_prompt_from_stdin(served: Served) -> None:
    before = prompt_tokens(served)
    ok(run(served, MODEL_ID, "--max-tokens", "4", stdin="Hi"))
    short = prompt_tokens(served) - before
    long_prompt = "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 8
    ok(run(served, MODEL_ID, "--max-tokens", "4", stdin=long_prompt))
    assert prompt_tokens(served) - before - short > short + 40  # the piped text was sent


def test_run_format_json_and_system(served: Served) -> None:
    result = ok(run(served, MODEL_ID, "Name a colour.", "--format", "json", "--max-tokens", "6"))
    assert result.stdout.lstrip().startswith("{"), result.stdout  # constrained to JSON
    before = prompt_tokens(served)
    ok(run(served, MODEL_ID, "Hi", "--max-tokens", "2"))
    plain = prompt_tokens(served) - before
    system = " ".join(["Answer in one word."] * 12)  # longer than the template's own default
    ok(run(served, MODEL_ID, "Hi", "--max-tokens", "2", "--system", system))
    assert prompt_tokens(served) - before - plain > plain + 20  # the system prompt was sent


def test_run_an_unknown_model_names_it_and_starts_nothing(served: Served) -> None:
    before = deployments(served)
    failed(run(served, "no-such-model-xyz", "Hi"), "no-such-model-xyz")
    assert [d["id"] for d in deployments(served)] == [d["id"] for d in before]
    failed(run(served, MODEL_ID, stdin=""), "no prompt")
    failed(run(served, MODEL_ID, "Hi", "--keep-alive", "soon"), "soon")


def test_a_key_only_anvyl_holds_is_bypassed_through_the_gateway(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    """With a token, on-demand deployments get a key the CLI cannot know: the gateway, which
    takes the server's token, carries the chat instead."""
    token, port = "run-test-token", free_port()
    args = ("--runtime", "process", "--gateway-port", str(port), "--ollama-port", "0")
    server = serve_models(
        make_home(tmp_path, bundled_model), run_labels, args=(*args, "--token", token)
    )
    server.env["ANVYL_TOKEN"] = token
    try:
        closed = f"http://127.0.0.1:{free_port()}"
        failed(
            run(server, MODEL_ID, "Hi", "--max-tokens", "2", ANVYL_GATEWAY_URL=closed),
            "requires an API key",
            closed,
        )
        gateway = f"http://127.0.0.1:{port}/v1"
        result = ok(run(server, MODEL_ID, "Hi", "--max-tokens", "4", ANVYL_GATEWAY_URL=gateway))
        assert result.stdout.strip()
    finally:
        try:
            stop_all(server)
        finally:
            server.stop()


class Terminal:
    """`anvyl run` on a pseudo-terminal: type lines, wait for text, send Ctrl-C or Ctrl-D."""

    def __init__(self, served: Served, *args: str) -> None:
        env = {**os.environ, "ANVYL_ADDR": served.address, **served.env, "TERM": "dumb"}
        env.pop("ANVYL_DEBUG", None)
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal (Ctrl-C is SIGINT)
            os.execve(ANVYL, [ANVYL, "run", *args], env)
        self.pid, self.fd = pid, fd
        self.seen = ""
        self.status: int | None = None

    def type(self, text: str) -> None:
        """Write `text` as keystrokes."""
        os.write(self.fd, text.encode())

    def expect(self, text: str, *, after: int, timeout: float = RUN_TIMEOUT_S) -> int:
        """Wait until `text` appears in the output past offset `after`; its end offset."""
        deadline = time.monotonic() + timeout
        while (found := self.seen.find(text, after)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.seen}")
        return found + len(text)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # the child closed the terminal
            return False
        self.seen += chunk.decode(errors="replace")
        return bool(chunk)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            self._read(0.1)
        raise AssertionError(f"anvyl run did not exit; the terminal shows:\n{self.seen}")

    def close(self) -> None:
        """Kill the process if it still runs; close the terminal."""
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture
def terminal(served: Served) -> Iterator[list[Terminal]]:
    """Terminals a test opens, closed after it."""
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def test_interactive_keeps_the_conversation_and_clear_forgets_it(
    served: Served, terminal: list[Terminal]
) -> None:
    t = Terminal(served, MODEL_ID, "--max-tokens", "6")
    terminal.append(t)
    counts = [prompt_tokens(served)]
    at = t.expect(">>> ", after=0)
    for line in ("Hello there", "Hello there", "/clear", "Hello there"):
        t.type(line + "\n")
        at = t.expect(">>> ", after=at)
        counts.append(prompt_tokens(served))
    first, second, cleared, third = (b - a for a, b in pairwise(counts))
    assert first > 0
    assert second > first  # the second turn carried the first (question and answer)
    assert cleared == 0
    assert third == first  # after /clear, as at the start
    t.type('"""Hello\nthere"""\n')  # a multi-line block is one message
    at = t.expect(">>> ", after=at)
    assert prompt_tokens(served) > counts[-1]
    t.type("\x04")  # Ctrl-D leaves
    assert t.wait() == 0


def test_interactive_ctrl_c_stops_the_answer_not_the_session(
    served: Served, terminal: list[Terminal]
) -> None:
    t = Terminal(served, MODEL_ID, "--max-tokens", "2000")
    terminal.append(t)
    at = t.expect(">>> ", after=0)
    t.type("Write a very long story about a dragon.\n")
    at = t.expect("\n", after=at + 1)  # the echo of the line
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(t.seen) <= at + 10 and t._read(deadline - time.monotonic()):
        pass  # the answer is being written
    t.type("\x03")
    at = t.expect("(stopped)", after=at)
    wait_for(
        lambda: metric(served, "anvyl_active_sequences") == 0,
        timeout=30,
        what="the model server to stop generating",
    )
    at = t.expect(">>> ", after=at)
    t.type("\x03")  # at the prompt: a hint, the session stays
    at = t.expect("/bye", after=at)
    t.type("/bye\n")
    assert t.wait() == 0


def test_interactive_reloads_a_model_that_unloaded_between_turns(
    served: Served, terminal: list[Terminal]
) -> None:
    """Last in the module: its keep-alive stays on the model's deployments."""
    t = Terminal(served, MODEL_ID, "--max-tokens", "3", "--keep-alive", "4s")
    terminal.append(t)
    at = t.expect(">>> ", after=0)
    t.type("Hello\n")
    at = t.expect(">>> ", after=at)
    first = {d["id"] for d in deployments(served)}
    wait_for(lambda: not deployments(served), timeout=60, what="the idle model to unload")
    t.type("Hello again\n")
    at = t.expect(">>> ", after=at)
    assert "error" not in t.seen[at - 200 :], t.seen
    (d,) = deployments(served)  # loaded again for the second turn
    assert d["id"] not in first
    t.type("/bye\n")
    assert t.wait() == 0
