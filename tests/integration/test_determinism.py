"""At temperature 0, or with a fixed seed, the same request gives the same text every time:
streamed or not, with its prefix cached or not, alone or in a batch of 31 others. An auditor who
replays a logged request gets the logged answer (engine.deterministic, on by default).

llama.cpp's CPU kernels round a token computed alone for its sequence differently from one
computed beside others of its prompt (benchmarks/llamacpp_rounding.py, docs/performance.md), so
without the setting a reused prefix (whose last token, or whose earlier answer, was computed
alone) could change a greedy answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import MODEL_ID, Server, run_server

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a careful assistant of a hospital's records office."},
    {"role": "user", "content": "Explain in a few sentences why records are kept, and for whom."},
]
GREEDY: dict[str, Any] = {"model": MODEL_ID, "temperature": 0, "max_tokens": 48}
SEEDED: dict[str, Any] = {"model": MODEL_ID, "temperature": 0.9, "seed": 7, "max_tokens": 48}
OTHERS = 31


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("determinism")) as srv:
        yield srv


def client(key: str, srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)


def ask(c: openai.OpenAI, params: dict[str, Any], stream: bool = False) -> tuple[str, int]:
    """The answer and its prompt tokens reused from the prefix cache."""
    if not stream:
        reply = c.chat.completions.create(messages=PROMPT, **params)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        cached = reply.usage.prompt_tokens_details.cached_tokens or 0
        return str(reply.choices[0].message.content), cached
    include_usage: Any = {"include_usage": True}
    chunks = list(
        c.chat.completions.create(
            messages=PROMPT, stream=True, stream_options=include_usage, **params
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return text, usage.prompt_tokens_details.cached_tokens or 0


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_the_same_text_streamed_cached_and_in_a_batch(
    server: Server, params: dict[str, Any]
) -> None:
    # Each case its own tenants: a cached prefix serves only the tenant that left it.
    tag = "greedy" if params is GREEDY else "seeded"
    ours, cold = (client(server.create_key(f"{tag}-{n}"), server) for n in ("ours", "cold"))
    alone, none = ask(ours, params)
    assert alone and none == 0
    again, cached = ask(ours, params)
    assert again == alone and cached > 0
    assert ask(ours, params, stream=True) == (alone, cached)

    async def in_a_batch() -> list[tuple[str, int]]:
        """Ours (cached, then cold, then cold and streamed) while 31 others decode beside it:
        its prompt chunk runs in the same steps as their decode tokens."""
        others = openai.AsyncOpenAI(
            base_url=server.base_url, api_key=server.create_key(f"{tag}-others"), max_retries=0
        )
        story = [
            others.chat.completions.create(
                model=MODEL_ID,
                messages=[{"role": "user", "content": f"Write a long story, number {i}."}],
                max_tokens=400,
                temperature=0.8,
                extra_body={"ignore_eos": True},
            )
            for i in range(OTHERS)
        ]
        tasks = [asyncio.ensure_future(s) for s in story]
        await asyncio.to_thread(server.wait_for_metric, "num_requests_running", OTHERS, 300)
        answers = [
            await asyncio.to_thread(ask, ours, params),
            await asyncio.to_thread(ask, cold, params),
            await asyncio.to_thread(ask, cold, params, True),
        ]
        # All 31 still decoding when ours ended: it was computed in their batch throughout.
        running = await asyncio.to_thread(server.metric, "num_requests_running")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert running == OTHERS
        return answers

    batched = asyncio.run(in_a_batch())
    assert batched[0] == (alone, cached)
    # The cold tenant's first request reused nothing; its second, streamed, its own prompt.
    assert batched[1] == (alone, 0)
    assert batched[2] == (alone, cached)


def test_the_next_turn_answers_the_same_with_its_history_cached_or_not(server: Server) -> None:
    """A chat's second turn reuses the prompt of its first from the cache (not the answer,
    which was decoded token by token), and answers as a tenant with nothing cached does."""
    warm, cold = (client(server.create_key(f"turns-{n}"), server) for n in ("warm", "cold"))
    first = warm.chat.completions.create(messages=PROMPT, **GREEDY)
    assert first.usage is not None
    turn2: list[ChatCompletionMessageParam] = [
        *PROMPT,
        {"role": "assistant", "content": str(first.choices[0].message.content)},
        {"role": "user", "content": "Who may read them?"},
    ]
    again = warm.chat.completions.create(messages=turn2, **GREEDY)
    fresh = cold.chat.completions.create(messages=turn2, **GREEDY)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert fresh.usage is not None and fresh.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert again.choices[0].message.content == fresh.choices[0].message.content
