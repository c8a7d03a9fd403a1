"""A request is tokenized once: the ids the gateway's count made are the ones the engine runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from sovllm.engines.base import ChatMessage, GenerationRequest, SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.settings import EngineSettings
from tests.conftest import MODEL_ID


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(resolve_model(MODEL_ID), EngineSettings(slots=2, context_per_slot=512))
    eng.start()
    try:
        yield eng
    finally:
        eng.shutdown()


@pytest.fixture
def tokenized(engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the engine's model tokenizes from now on."""
    llm = engine._llm
    assert llm is not None
    texts: list[str] = []
    real = llm.tokenize

    def spy(text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        texts.append(text)
        return real(text, add_special=add_special, parse_special=parse_special)

    monkeypatch.setattr(llm, "tokenize", spy)
    return texts


def chat(rid: str, text: str) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=2, temperature=0.0)
    return GenerationRequest(rid, sampling, messages=[ChatMessage("user", text)])


async def answer(engine: LlamaCppEngine, req: GenerationRequest) -> int:
    """The prompt tokens the engine ran the request with."""
    outs = [out async for out in engine.submit(req)]
    return outs[-1].prompt_tokens


async def test_submit_runs_the_ids_its_count_made(
    engine: LlamaCppEngine, tokenized: list[str]
) -> None:
    req = chat("once", "Count the words of this sentence, please.")
    counted = engine.count_tokens(req)
    assert len(tokenized) == 1
    # The gateway names the tenant between count and submit: the same prompt.
    ran = await answer(engine, dataclasses.replace(req, flow="hospital"))
    assert len(tokenized) == 1
    assert ran == counted


async def test_a_prompt_masked_after_counting_is_tokenized_again(
    engine: LlamaCppEngine, tokenized: list[str]
) -> None:
    req = chat("masked", "Write to ada.lovelace@analytical-engine.example.org about it.")
    counted = engine.count_tokens(req)
    masked = dataclasses.replace(req, messages=[ChatMessage("user", "Write to <EMAIL> about it.")])
    ran = await answer(engine, masked)
    # The engine runs the masked text, never the ids counted for the original one.
    assert len(tokenized) == 2 and "<EMAIL>" in tokenized[1]
    assert ran == engine.count_tokens(masked) < counted


async def test_a_request_not_counted_is_tokenized_at_submit(
    engine: LlamaCppEngine, tokenized: list[str]
) -> None:
    ran = await answer(engine, chat("direct", "Say hello."))
    assert len(tokenized) == 1 and ran > 0
