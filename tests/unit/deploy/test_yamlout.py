"""The hand-written YAML reads back as the objects it was written from, comments aside."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sovllm.deploy.yamlout import Document, Noted, dump, plain

TRICKY = [
    "yes",
    "No",
    "on",
    "null",
    "~",
    "true",
    "1",
    "0.9",
    "1e3",
    "0x1F",
    "",
    " lead",
    "trail ",
    "a: b",
    "# not a comment",
    "- item",
    "[x]",
    "{x}",
    "*ref",
    "&anchor",
    "!tag",
    "@at",
    "`tick",
    "quote'",
    'double"',
    "back\\slash",
    "tab\there",
    "ünïcode",
    "--flag",
    "-c",
    "0.0.0.0",
    "key:",
    "http://h:8000/v1",
    "2026-12-03",
    "12:30",
    "multi\nline\n",
    "no final\nnewline",
    "trailing \nspace\n",
    "\nleading newline\n",
    "A\n",
    "key with a final newline\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings_read_back(text: str) -> None:
    obj = {"k": text, "l": [text, Noted(text, "why")], text or "e": {"n": Noted(text, "x")}}
    assert yaml.safe_load(dump([Document(obj)])) == plain(obj)


def test_notes_become_comments_and_headers_lines() -> None:
    obj = {"spec": {"replicas": Noted(3, "plan: replicas"), "args": ["--tp", Noted("4", "tp")]}}
    text = dump([Document(obj, ("first", "")), Document({"b": []})])
    assert text == (
        '# first\n#\nspec:\n  replicas: 3  # plan: replicas\n  args:\n  - "--tp"\n'
        '  - "4"  # tp\n---\nb: []\n'
    )


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), trees, max_size=5))
def test_any_tree_reads_back(obj: dict[str, Any]) -> None:
    assert yaml.safe_load(dump([Document(obj)])) == (obj or None)
