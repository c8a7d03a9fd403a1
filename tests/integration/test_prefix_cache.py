"""A chat's next turn reuses the KV cache its previous turn left in a slot, and answers the same.

llama.cpp's CPU kernels round differently by batch shape: a token computed alone, or beside
others, gets logits that differ by up to ~0.75 here (llama-server's docs warn of the same for
its `cache_prompt`). A greedy answer can thus change with what else shares a step, with or
without the prefix cache. To check that a reused cache is exactly the one a full prefill would
build, both engines below run with a step budget of one token, so every token is computed
alone: any difference left would come from the reuse.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from sovllm.engines.base import ChatMessage, GenerationOutput, GenerationRequest, SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.settings import EngineSettings
from tests.conftest import MODEL_ID, Server

DOCUMENT = (
    "Summarise this note in one line: the patient, born in 1961, was admitted on Monday with "
    "chest pain radiating to the left arm, treated with aspirin and nitroglycerin, and moved "
    "to the cardiology ward for observation after an abnormal electrocardiogram."
)
QUESTION = [ChatMessage("user", "Name three rivers in Europe and describe each one briefly.")]
FOLLOW_UP = ChatMessage("user", "Which of them is the longest?")


def one_token_steps(prefix_cache: bool) -> LlamaCppEngine:
    settings = EngineSettings(
        slots=2, context_per_slot=1024, prefix_cache=prefix_cache, deterministic=False
    )
    engine = LlamaCppEngine(resolve_model(MODEL_ID), settings)
    engine.start()
    engine.scheduler.step_tokens = 1
    return engine


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[LlamaCppEngine, LlamaCppEngine]]:
    """(with the prefix cache, without it)."""
    cached, fresh = one_token_steps(True), one_token_steps(False)
    try:
        yield cached, fresh
    finally:
        cached.shutdown()
        fresh.shutdown()


def chat(rid: str, messages: list[ChatMessage], max_tokens: int = 60) -> GenerationRequest:
    return GenerationRequest(
        rid, SamplingParams(max_tokens=max_tokens, temperature=0.0), messages=messages
    )


async def run(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[str, GenerationOutput]:
    outs = [out async for out in engine.submit(req)]
    return "".join(o.text for o in outs), outs[-1]


async def hits_of(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[str, int, int]:
    """The answer, and the prefix cache tokens looked up and hit while computing it."""
    before = engine.stats()
    text, _ = await run(engine, req)
    after = engine.stats()
    return (
        text,
        after.prefix_cache_queries - before.prefix_cache_queries,
        after.prefix_cache_hits - before.prefix_cache_hits,
    )


async def test_the_next_turn_reuses_the_previous_turn_and_answers_as_without_reuse(
    engines: tuple[LlamaCppEngine, LlamaCppEngine],
) -> None:
    cached, fresh = engines
    answer, first = await run(cached, chat("turn1", QUESTION))
    turn2 = chat("turn2", [*QUESTION, ChatMessage("assistant", answer), FOLLOW_UP])
    text, queries, hits = await hits_of(cached, turn2)
    assert queries == cached.count_tokens(turn2)
    # All of turn 1 is reused but its last sampled token, never decoded into the cache (and
    # whatever re-tokenizing the answer's text changes).
    in_cache = first.prompt_tokens + first.completion_tokens - 1
    assert 0.9 * in_cache <= hits <= in_cache
    reference, _, no_hits = await hits_of(fresh, turn2)
    assert no_hits == 0
    assert text == reference


async def test_a_repeated_prompt_recomputes_only_its_last_token(
    engines: tuple[LlamaCppEngine, LlamaCppEngine],
) -> None:
    cached, fresh = engines
    req = chat("same", [ChatMessage("user", "Describe a quiet harbour at dawn.")], 24)
    first, _, _ = await hits_of(cached, req)
    again, queries, hits = await hits_of(cached, req)
    assert hits == queries - 1
    assert again == first == (await run(fresh, req))[0]


async def test_a_cancelled_request_leaves_a_cache_that_is_safe_to_reuse(
    engines: tuple[LlamaCppEngine, LlamaCppEngine],
) -> None:
    cached, fresh = engines
    req = chat("cut", [ChatMessage("user", "Tell me about the history of the bicycle.")], 40)
    stream = cached.submit(req)
    async for out in stream:
        if out.completion_tokens == 5:
            stream.cancel()  # part way through its answer
    # The stream ends once the engine has let the sequence go, its cache left in the slot.
    assert out.finish_reason == "abort"
    text, _, hits = await hits_of(cached, req)
    assert hits == stream.prompt_tokens - 1
    assert text == (await run(fresh, req))[0]


def test_the_counters_are_on_the_metrics_endpoint(server: Server) -> None:
    key = server.create_key("prefix-cache")
    queries0 = server.metric("prefix_cache_queries_total")
    hits0 = server.metric("prefix_cache_hits_total")
    messages = [{"role": "user", "content": "Name a colour."}]
    prompts = []
    for _ in range(2):
        r = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": MODEL_ID, "messages": messages, "max_tokens": 16, "temperature": 0},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        prompts.append(body["usage"]["prompt_tokens"])
        answer = body["choices"][0]["message"]["content"]
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "More."}]
    # The counters may reach the gateway with the next look at the engine's stats.
    server.wait_for_metric("prefix_cache_queries_total", queries0 + sum(prompts))
    # At least the first turn's prompt is reused by the second.
    assert server.metric("prefix_cache_hits_total") - hits0 >= prompts[0]


async def test_a_cached_prefix_is_never_reused_across_tenants() -> None:
    """The engine itself keeps tenants apart: a slot's cache serves only the tenant that left
    it, whatever the gateway's routing does (another tenant could otherwise learn from its
    speed, or from cached_tokens, what was sent before it)."""
    settings = EngineSettings(slots=2, context_per_slot=512)
    engine = LlamaCppEngine(resolve_model(MODEL_ID), settings)
    engine.start()
    try:

        async def send(rid: str, tenant: str) -> GenerationOutput:
            sampling = SamplingParams(max_tokens=4, temperature=0.0)
            req = GenerationRequest(
                rid, sampling, messages=[ChatMessage("user", DOCUMENT)], flow=tenant
            )
            return (await run(engine, req))[1]

        first = await send("h1", "hospital")
        assert first.cached_tokens == 0 and first.prompt_tokens >= 2 * 32
        stranger = await send("l1", "law-firm")  # the identical prompt, another tenant
        assert stranger.cached_tokens == 0
        again = await send("h2", "hospital")
        assert again.cached_tokens == again.prompt_tokens - 2  # deterministic: two recomputed
        stats = engine.stats()
        assert stats.prefix_cache_hits == again.cached_tokens
    finally:
        engine.shutdown()


def test_tenants_do_not_share_cached_prompts_through_the_api(server: Server) -> None:
    """End to end: the gateway names each key's tenant to the engine."""
    clients = {
        tenant: openai.OpenAI(
            base_url=server.base_url, api_key=server.create_key(tenant), max_retries=0
        )
        for tenant in ("cache-hospital", "cache-law-firm")
    }

    def cached(tenant: str) -> int:
        reply = clients[tenant].chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": DOCUMENT + " (API)"}],
            max_tokens=4,
            temperature=0,
        )
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        return reply.usage.prompt_tokens_details.cached_tokens or 0

    assert cached("cache-hospital") == 0
    assert cached("cache-law-firm") == 0
    assert cached("cache-hospital") > 32
