"""Stop strings matched on streamed text (`modelserver/stopping.py`)."""

from __future__ import annotations

from anvyl.modelserver.stopping import StopMatcher, partial_stop_suffix


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    """Feed pieces until a stop; return the emitted text and whether it stopped."""
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_everything_through() -> None:
    """Without stop strings every piece is emitted at once."""
    m = StopMatcher([])
    assert m.feed("Hello") == ("Hello", False)
    assert m.flush() == ""


def test_stop_split_across_pieces_is_never_emitted() -> None:
    """A stop string spread over several pieces is held back, then cut."""
    m = StopMatcher(["</end>"])
    assert m.feed("abc</") == ("abc", False)
    assert m.feed("en") == ("", False)
    assert m.feed("d> tail") == ("", True)
    assert m.feed("more") == ("", True)


def test_false_alarm_is_released() -> None:
    """Held text that turns out not to be a stop string is emitted later."""
    assert feed_all(StopMatcher(["STOP"]), ["ST", "OP"]) == ("", True)
    assert feed_all(StopMatcher(["STOP"]), ["ST", "ay"]) == ("STay", False)
    assert feed_all(StopMatcher(["STOP"]), ["x", "ST"]) == ("xST", False)


def test_earliest_of_several_stops_wins() -> None:
    """With several stop strings, the text ends at the first one to appear."""
    assert feed_all(StopMatcher(["world", "lo"]), ["hello world"]) == ("hel", True)


def test_partial_suffix_length() -> None:
    """The held suffix is the longest proper prefix of any stop string."""
    assert partial_stop_suffix("abcST", ["STOP"]) == 2
    assert partial_stop_suffix("abc", ["STOP"]) == 0
    assert partial_stop_suffix("aaa", ["aab", "ab"]) == 2
