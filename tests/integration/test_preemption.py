"""A preempted sequence's KV cache is swapped out and back: its text is as if never paused."""

from __future__ import annotations

import asyncio

from sovllm.engines.base import ChatMessage, GenerationRequest, SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.settings import EngineSettings
from tests.conftest import wait_until_async


def request(rid: str, flow: str, prompt: str, tokens: int) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    return GenerationRequest(rid, sampling, messages=[ChatMessage("user", prompt)], flow=flow)


async def run(engine: LlamaCppEngine, req: GenerationRequest) -> str:
    return "".join([out.text async for out in engine.submit(req)])


async def test_swapped_out_sequences_continue_exactly() -> None:
    # No prefix cache: the runs below repeat the reference's prompts, and a reused prefix
    # changes the batch shapes, and with them llama.cpp's rounding (test_prefix_cache.py).
    settings = EngineSettings(slots=2, context_per_slot=512, prefix_cache=False)
    engine = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), settings)
    engine.start()
    try:
        prompts = ["Describe the sea in detail.", "Describe the mountains in detail."]
        # Reference: both A requests side by side, nobody else.
        reference = await asyncio.gather(
            *(run(engine, request(f"ref{i}", "A", p, 120)) for i, p in enumerate(prompts))
        )
        before = engine.scheduler.preemptions
        a = [
            asyncio.create_task(run(engine, request(f"a{i}", "A", p, 120)))
            for i, p in enumerate(prompts)
        ]
        await wait_until_async(lambda: engine.stats().running >= 2, "both A requests running")
        b = await run(engine, request("b", "B", "Say hi.", 8))
        texts = await asyncio.gather(*a)
        assert engine.scheduler.preemptions > before  # B took a slot from A
        assert b
        assert texts == reference
    finally:
        engine.shutdown()
