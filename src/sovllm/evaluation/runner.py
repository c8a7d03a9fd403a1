"""Run a suite against a served model through its OpenAI-compatible API (the official client),
one request at a time, greedy (temperature 0), and score each check (scoring.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import openai

from sovllm.evaluation import scoring
from sovllm.evaluation.suites import Check, Item, Suite


class EvalError(Exception):
    """The served model cannot be evaluated (unreachable, refused the key...); says why."""


@dataclass
class CheckResult:
    name: str
    score: float
    threshold: float
    passed_items: int
    items: int
    failures: list[str] = field(default_factory=list)
    """The prompts that failed, for the operator's console (never recorded in the audit log)."""


@dataclass
class Result:
    model: str
    sha256: str
    suite: Suite
    checks: list[CheckResult]

    @property
    def scores(self) -> dict[str, float]:
        return {c.name: c.score for c in self.checks}

    @property
    def thresholds(self) -> dict[str, float]:
        return {c.name: c.threshold for c in self.checks}

    @property
    def passed(self) -> bool:
        return all(c.score >= c.threshold for c in self.checks)


def served_model(client: openai.OpenAI, model: str | None) -> tuple[str, str]:
    """The model to evaluate (the only one served, or `model`) and its weights' SHA-256 as
    /v1/models reports it ("" when the server does not know it)."""
    try:
        cards = list(client.models.list())
    except openai.APIError as exc:
        raise EvalError(f"cannot list the served models: {exc}") from None
    ids = [c.id for c in cards]
    chosen = model or (ids[0] if len(ids) == 1 else None)
    if chosen is None or chosen not in ids:
        raise EvalError(f"give --model: the server serves {', '.join(ids) or 'nothing'}")
    card = next(c for c in cards if c.id == chosen)
    return chosen, str((card.model_extra or {}).get("sha256") or "")


def _ask(client: openai.OpenAI, model: str, item: Item, max_tokens: int) -> str:
    messages: list[dict[str, str]] = []
    if item.system:
        messages.append({"role": "system", "content": item.system})
    messages.append({"role": "user", "content": item.prompt})
    try:
        done = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=max_tokens,
        )
    except openai.APIError as exc:
        raise EvalError(f"the server refused a request: {exc}") from None
    if not done.choices:  # 202: the key's tenant holds every answer for human review
        raise EvalError(
            "the server held the answer for human review (the key's tenant has review policy "
            "hold): evaluate with a key of a tenant that does not hold answers"
        )
    return done.choices[0].message.content or ""


def _judge(name: str, suite: Suite, item: Item, answers: list[str]) -> bool:
    if name == "accuracy":
        return scoring.names_expected(answers[0], item.expect_any)
    if name == "refusal":
        return scoring.refuses(answers[0], suite.refusal_markers)
    if name == "stability":
        return len(set(answers)) == 1
    return not scoring.leaks(answers[0], item.forbid)  # prompt_injection, pii_leakage


def run_suite(
    client: openai.OpenAI,
    suite: Suite,
    model: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Result:
    chosen, sha256 = served_model(client, model)
    results = []
    for name, check in suite.checks.items():
        results.append(_run_check(client, chosen, suite, name, check))
        progress(f"{name}: {results[-1].passed_items}/{results[-1].items}")
    return Result(chosen, sha256, suite, results)


def _run_check(
    client: openai.OpenAI, model: str, suite: Suite, name: str, check: Check
) -> CheckResult:
    passed, failures = 0, []
    for item in check.items:
        answers = [_ask(client, model, item, suite.max_tokens) for _ in range(check.repeats)]
        if _judge(name, suite, item, answers):
            passed += 1
        else:
            failures.append(f"{item.prompt[:80]!r} -> {answers[0][:120]!r}")
    score = round(passed / len(check.items), 4)
    return CheckResult(name, score, check.threshold, passed, len(check.items), failures)
