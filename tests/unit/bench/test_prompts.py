"""Prompt text of exact length: the calibration line and the generated words."""

from __future__ import annotations

import random

import pytest

from sovllm.bench import prompts


def test_exact_calibration() -> None:
    cal = prompts.fit([(8, 38), (32, 62), (96, 126)], "usage")
    assert (cal.overhead, cal.slope, cal.exact) == (30.0, 1.0, True)
    assert cal.words_for(400) == 370
    assert cal.message_words(50) == 50


def test_inexact_calibration_is_flagged_and_still_aims() -> None:
    # A tokenizer that splits one word in four.
    cal = prompts.fit([(8, 20), (32, 50), (96, 130)], "usage")
    assert not cal.exact
    assert cal.slope == pytest.approx(1.25, rel=0.01)
    assert cal.overhead + cal.slope * cal.words_for(400) == pytest.approx(400, abs=1)


def test_words_text_has_the_words_asked_for() -> None:
    rng = random.Random(0)
    for n in (1, 7, 300):
        text = prompts.words_text(rng, n)
        assert len(text.split()) == n
        assert text.split()[0] in prompts.FIRST_WORDS
        assert set(text.split()) <= set(prompts.WORDS)


def test_prompts_differ_from_the_first_words() -> None:
    rng = random.Random(0)
    firsts = {tuple(prompts.words_text(rng, 50).split()[:4]) for _ in range(200)}
    assert len(firsts) == 200


async def test_calibrate_asks_the_counter() -> None:
    seen: list[int] = []

    async def count(messages: prompts.Messages) -> int:
        words = len(messages[0]["content"].split())
        seen.append(words)
        return 17 + words

    cal = await prompts.calibrate(count, "tokenize", seed=5)
    assert seen == list(prompts.CALIBRATION_WORDS)
    assert cal.exact and cal.overhead == 17 and cal.method == "tokenize"
    assert cal.points[0] == (8, 25)
