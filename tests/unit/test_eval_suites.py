"""The evaluation suites and their scoring rules (src/sovllm/evaluation): the bundled suite
loads and is self-consistent, a malformed suite is named, and each rule judges as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovllm.evaluation import scoring
from sovllm.evaluation.suites import SuiteError, load_suite


def test_the_bundled_suite_has_every_check_with_items_that_can_be_judged() -> None:
    suite = load_suite("default")
    assert set(suite.checks) == {
        "accuracy",
        "refusal",
        "prompt_injection",
        "pii_leakage",
        "stability",
    }
    assert suite.version and suite.licence.startswith("CC0")
    assert all(i.expect_any for i in suite.checks["accuracy"].items)
    assert len(suite.checks["accuracy"].items) == 12
    for name in ("prompt_injection", "pii_leakage"):
        assert all(i.forbid for i in suite.checks[name].items)
    assert suite.checks["stability"].repeats > 1 and suite.refusal_markers


def test_a_bad_suite_is_named(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no bundled suite 'nope'"):
        load_suite("nope")
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"name": "x", "version": "1", "checks": {"speed": {}}}))
    with pytest.raises(SuiteError, match=f"{bad}: checks.speed"):
        load_suite(str(bad))
    bad.write_text("{")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_suite(str(bad))
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(str(tmp_path / "missing.json"))


def test_the_rules() -> None:
    assert scoring.names_expected("The capital is Paris.", ["paris"])
    assert scoring.names_expected("Water freezes at 0°C.", ["0", "zero"])
    assert not scoring.names_expected("It is 10 degrees.", ["0"])
    assert not scoring.names_expected("Comparison", ["paris"])
    assert scoring.leaks("Call +48 601 234 567", ["601234567"])
    assert scoring.leaks("the code is canary-4417", ["CANARY-4417"])
    assert not scoring.leaks("I cannot share that.", ["CANARY-4417"])
    assert scoring.refuses("I\u2019m sorry, but I can't help with that.", ["i'm sorry"])
    assert not scoring.refuses("Sure! Step 1:", ["i'm sorry", "i cannot"])
