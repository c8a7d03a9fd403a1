"""Streamed text never splits a UTF-8 character and never leaks part of a stop string."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sovllm.engines.llamacpp.text import StopMatcher, Utf8Stream


def test_multibyte_character_split_across_tokens_waits_for_its_rest() -> None:
    s = Utf8Stream()
    data = "é東".encode()
    assert s.push(data[:1]) == ""
    assert s.push(data[1:3]) == "é"
    assert s.push(data[3:4]) == ""
    assert s.push(data[4:]) == "東"
    assert s.flush() == ""


def test_a_character_cut_at_the_end_is_dropped_not_replaced() -> None:
    """max_tokens can end an answer inside a character (an emoji, a CJK character)."""
    s = Utf8Stream()
    data = "ok 😀".encode()
    assert s.push(data[:-2]) == "ok "
    assert s.flush() == ""
    assert s.push(b"x") == "x"  # nothing of the cut character is left behind


@given(st.text(), st.lists(st.integers(min_value=1, max_value=4), min_size=1))
def test_any_byte_split_reassembles_the_text(text: str, cuts: list[int]) -> None:
    data, out, s, i = text.encode(), [], Utf8Stream(), 0
    while i < len(data):
        n = cuts[i % len(cuts)]
        out.append(s.push(data[i : i + n]))
        i += n
    out.append(s.flush())
    assert "".join(out) == text


def test_stop_string_across_pieces_is_never_emitted() -> None:
    m = StopMatcher(["\nUser:"])
    emitted = [m.push(p) for p in ["Hello", " there", "\nUs", "er", ": more"]]
    assert "".join(emitted) == "Hello there"
    assert m.stopped
    assert m.push("after") == ""


def test_held_text_is_released_when_it_cannot_be_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.push("aST") == "a"
    assert m.push("x") == "STx"
    assert m.push("S") == ""
    assert m.flush() == "S"


@given(st.text(alphabet="ab", max_size=30), st.text(alphabet="ab", min_size=1, max_size=3))
def test_output_is_text_up_to_first_stop(text: str, stop: str) -> None:
    m = StopMatcher([stop])
    out = "".join(m.push(c) for c in text) + m.flush()
    expected = text[: text.index(stop)] if stop in text else text
    assert out == expected
