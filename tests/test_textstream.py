"""The pure text-stream pieces: UTF-8 hold-back and stop-string matching."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from llm4all.engine.textstream import StopMatcher, Utf8Stream


def test_utf8_split_character_is_held_back() -> None:
    stream = Utf8Stream()
    data = "你好".encode()
    assert stream.feed(data[:2]) == ""
    assert stream.feed(data[2:4]) == "你"
    assert stream.feed(data[4:]) == "好"
    assert stream.flush() == ""


def test_utf8_incomplete_tail_becomes_replacement_only_at_flush() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"ok\xe4") == "ok"
    assert stream.flush() == "\ufffd"


@given(st.text(), st.lists(st.integers(min_value=0, max_value=50), max_size=20))
def test_utf8_any_split_reassembles(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    stream = Utf8Stream()
    out = "".join(stream.feed(data[a:b]) for a, b in itertools.pairwise(points))
    assert out + stream.flush() == text


def test_stop_across_chunks_is_not_leaked() -> None:
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hello\nUs").text == "Hello"
    result = m.feed("er: more")
    assert result.stopped and result.text == ""
    assert m.flush() == ""


def test_partial_stop_released_when_it_does_not_complete() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST").text == "abc "
    assert m.feed("ART").text == "START"
    assert m.feed("x ST").text == "x "
    assert m.flush() == "ST"


def test_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(["world", "lo w"])
    result = m.feed("hello world")
    assert result.stopped and result.text == "hel"


@given(
    st.text(max_size=40), st.text(min_size=1, max_size=5), st.lists(st.integers(0, 45), max_size=8)
)
def test_stop_matcher_equals_whole_text_search(text: str, stop: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    m = StopMatcher([stop])
    out, stopped = "", False
    for a, b in itertools.pairwise(points):
        r = m.feed(text[a:b])
        out += r.text
        stopped = stopped or r.stopped
    out += m.flush()
    i = text.find(stop)
    assert out == (text[:i] if i >= 0 else text)
    assert stopped == (i >= 0)
