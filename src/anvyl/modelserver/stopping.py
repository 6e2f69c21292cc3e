"""Stop strings matched on decoded text, as a stream arrives piece by piece.

Matching text rather than token ids is what clients mean by `stop`: the same string can be
tokenized many ways. Text that might be the start of a stop string is held back until the next
piece shows whether it is one, so a stop string never reaches the client, not even in part.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feeds decoded pieces through; reports the first stop string and what precedes it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, piece: str) -> tuple[str, bool]:
        """Consume `piece`; return (text safe to emit, whether a stop string completed)."""
        if self.stopped:
            return "", True
        buf = self._held + piece
        if not self._stops:
            self._held = ""
            return buf, False
        first = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:
            self._held = ""
            self.stopped = True
            self.matched = next(s for s in self._stops if buf.find(s) == first)
            return buf[:first], True
        keep = partial_stop_suffix(buf, self._stops)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def partial_stop_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
