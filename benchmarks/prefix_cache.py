"""TTFT per turn of multi-turn chats on the embedded engine, with and without the prefix cache.

One engine at a time (SmolLM2-135M-Instruct, `--threads` CPU threads), greedy. Each turn sends
the whole conversation so far plus a new user message of ~`--new-tokens` tokens, and asks for
`--answer-tokens` tokens. `--users` conversations run side by side. Prints the engine's TTFT
(arrival to first token) per turn, the median over users and repetitions, and the prefix cache
hit rate.

    .venv/bin/python benchmarks/prefix_cache.py [--turns 8] [--users 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics

from sovllm.engines.base import ChatMessage, GenerationRequest, SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.settings import EngineSettings

_TEXT = (
    "the a river mountain city engine quiet bright tomorrow because under seven market window "
    "garden letter silver morning travel winter number question answer paper history science "
    "music ocean forest village machine system people story language simple careful ancient"
)
_WORDS = _TEXT.split(" ")


def message(rng: random.Random, words: int) -> str:
    return "Tell me about " + " ".join(rng.choice(_WORDS) for _ in range(words)) + "."


async def conversation(engine: LlamaCppEngine, user: int, args: argparse.Namespace) -> list[float]:
    rng = random.Random(user)
    messages: list[ChatMessage] = []
    ttfts = []
    for turn in range(args.turns):
        # ~0.8 words per token for this text.
        messages.append(ChatMessage("user", message(rng, int(args.new_tokens * 0.8))))
        sampling = SamplingParams(max_tokens=args.answer_tokens, temperature=0.0)
        req = GenerationRequest(f"u{user}t{turn}", sampling, messages=list(messages))
        text = ""
        async for out in engine.submit(req):
            text += out.text
            if out.finished:
                t = out.timings
                assert t is not None and t.first_token is not None, out
                ttfts.append(t.first_token - t.arrival)
        messages.append(ChatMessage("assistant", text))
    return ttfts


async def measure(args: argparse.Namespace) -> None:
    """Both engines loaded, used in turn (one busy at a time), so that load from elsewhere on
    the machine falls on both alike."""
    engines = {}
    for prefix_cache in (False, True):
        settings = EngineSettings(
            slots=max(4, args.users), context_per_slot=2048, threads=args.threads,
            prefix_cache=prefix_cache,
        )  # fmt: skip
        engines[prefix_cache] = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), settings)
        engines[prefix_cache].start()
    try:
        per_turn: dict[bool, list[list[float]]] = {
            k: [[] for _ in range(args.turns)] for k in engines
        }
        for rep in range(args.repeat):
            for prefix_cache, engine in engines.items():
                runs = await asyncio.gather(
                    *(conversation(engine, rep * 1000 + u, args) for u in range(args.users))
                )
                for ttfts in runs:
                    for turn, ttft in enumerate(ttfts):
                        per_turn[prefix_cache][turn].append(ttft)
        for prefix_cache, engine in engines.items():
            stats = engine.stats()
            medians = " ".join(
                f"{statistics.median(v) * 1000:6.0f}" for v in per_turn[prefix_cache]
            )
            queries = stats.prefix_cache_queries
            rate = f"{stats.prefix_cache_hits / queries:.0%}" if queries else "-"
            print(f"prefix_cache={prefix_cache!s:5}  TTFT ms by turn: {medians}   hits {rate}")
    finally:
        for engine in engines.values():
            engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--answer-tokens", type=int, default=64)
    args = parser.parse_args()
    print(f"{args.users} user(s) x {args.turns} turns, ~{args.new_tokens} new tokens a turn, "
          f"{args.answer_tokens}-token answers, {args.threads} threads, {args.repeat} repeats")  # fmt: skip
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
