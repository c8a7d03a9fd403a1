"""Arrival processes and traces."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest

from sovllm.bench.config import BadSpec
from sovllm.bench.workload import arrival_gaps, load_trace


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_gamma_gaps_have_the_rate_and_shape(burstiness: float) -> None:
    gaps = list(itertools.islice(arrival_gaps(random.Random(7), 20.0, burstiness), 40_000))
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    assert mean == pytest.approx(1 / 20, rel=0.03)
    # Gamma(k): coefficient of variation 1/sqrt(k); Poisson (k=1) has CV 1.
    assert math.sqrt(var) / mean == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"timestamp": 105.5, "prompt_tokens": 40, "output_tokens": 8}\n'
        "\n"
        '{"timestamp": 100.0, "prompt": "hi there", "max_tokens": 4}\n'
        '{"timestamp": 101.0, "messages": [{"role": "user", "content": "x"}], "output_tokens": 2}\n'
    )
    items = load_trace(path)
    assert [i.offset_s for i in items] == [0.0, 1.0, 5.5]
    assert items[0].messages == [{"role": "user", "content": "hi there"}]
    assert items[2].prompt_tokens == 40 and items[2].messages is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"timestamp": 1}\n', "bad trace line"),
        ('{"prompt_tokens": 3, "output_tokens": 2}\n', "bad trace line"),
        ('{"timestamp": 1, "prompt_tokens": 3, "output_tokens": 0}\n', "at least 1"),
        ("", "no requests"),
        ("not json\n", "bad trace line"),
    ],
)
def test_bad_trace(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(BadSpec) as err:
        load_trace(path)
    assert err.value.flag == "--replay" and words in str(err.value)


def test_missing_trace(tmp_path: Path) -> None:
    with pytest.raises(BadSpec, match="cannot read"):
        load_trace(tmp_path / "nope.jsonl")
