"""StopMatcher: held-back prefixes, matches across chunk boundaries, never emitting a stop string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.stops import StopMatcher


def test_stop_split_across_chunks_is_held_then_dropped():
    m = StopMatcher(["</s>"])
    assert m.push("Hello <") == ("Hello ", False) and m.held == "<"
    assert m.push("/s") == ("", False) and m.held == "</s"
    assert m.push(">tail") == ("", True) and m.matched == "</s>"


def test_a_prefix_that_does_not_complete_is_released():
    m = StopMatcher(["</s>"])
    assert m.push("a<") == ("a", False)
    assert m.push("b>") == ("<b>", False) and m.held == ""


def test_text_before_the_stop_in_the_same_chunk_is_emitted():
    m = StopMatcher(["STOP", "\n\n"])
    assert m.push("one\ntwo STOP three") == ("one\ntwo ", True)


def test_the_first_completed_match_wins_and_overlapping_prefixes():
    assert StopMatcher(["cd", "bcde"]).push("abcdef") == ("ab", True)  # "cd" completes first
    assert StopMatcher(["bcd", "cd"]).push("abcdef") == ("a", True)  # both end at 4: earlier start
    m = StopMatcher(["ab"])
    assert m.push("a") == ("", False)
    assert m.push("a") == ("a", False) and m.held == "a"
    assert m.push("b") == ("", True)


def test_flush_releases_held_text_and_no_stops_passes_everything():
    m = StopMatcher(["###"])
    assert m.push("x##") == ("x", False)
    assert m.flush() == "##" and m.held == ""
    assert StopMatcher([]).push("anything ###") == ("anything ###", False)


def test_push_after_a_match_is_an_error():
    m = StopMatcher(["x"])
    m.push("x")
    with pytest.raises(RuntimeError, match="already matched"):
        m.push("y")


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab<>/s\né", max_size=40),
       st.lists(st.text(alphabet="ab<>/sé", min_size=1, max_size=4), min_size=1, max_size=3),
       st.lists(st.integers(0, 100), max_size=12))
def test_streamed_output_equals_the_text_cut_at_the_first_stop(text, stops, cuts):
    m = StopMatcher(stops)
    out, stopped = "", False
    for chunk in _chunks(text, cuts):
        emitted, stopped = m.push(chunk)
        out += emitted
        if stopped:
            break
    if not stopped:
        out += m.flush()
    ends = [(p + len(s), p) for s in stops if (p := text.find(s)) >= 0]
    first = min(ends)[1] if ends else None
    assert stopped == (first is not None)
    assert out == (text if first is None else text[:first])
    assert not any(s in out for s in stops)
