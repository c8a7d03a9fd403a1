"""What `engine.deterministic` costs, and what it buys: the embedded engine with it off and on.

Two engines on the same model (SmolLM2-135M-Instruct) and threads, loaded side by side and used
in turn (one busy at a time, interleaved, `--repeat` rounds), so that load from elsewhere on the
machine falls on both alike:

- decode-heavy: 32 streams at once, 64-token prompts, 128 forced output tokens: aggregate
  output tok/s;
- chat: 8 users x 4 turns, each turn resending the conversation (the prefix cache at work):
  the median TTFT and the round's wall time;
- answers: 32 greedy prompts, each asked alone, then all 32 at once while the engine also
  decodes, then each alone again with its prompt cached: how many answers differ from the
  first, alone and uncached.

Prints every round, then medians and spreads and the ratios on/off.

    .venv/bin/python benchmarks/determinism_cost.py [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

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
STREAMS = 32


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


async def generate(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[str, float, int]:
    """The text, its TTFT (s) and its output tokens."""
    text, ttft, tokens = "", 0.0, 0
    async for out in engine.submit(req):
        text += out.text
        if out.finished:
            t = out.timings
            assert t is not None and t.first_token is not None, out
            ttft, tokens = t.first_token - t.arrival, out.completion_tokens
    return text, ttft, tokens


def request(rid: str, messages: list[ChatMessage], tokens: int, forced: bool) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=forced)
    return GenerationRequest(rid, sampling, messages=messages)


async def decode_heavy(engine: LlamaCppEngine, seed: int) -> float:
    rng = random.Random(seed)
    reqs = [
        request(f"d{seed}-{i}", [ChatMessage("user", words(rng, 50))], 128, True)
        for i in range(STREAMS)
    ]
    start = time.perf_counter()
    done = await asyncio.gather(*(generate(engine, r) for r in reqs))
    return sum(d[2] for d in done) / (time.perf_counter() - start)


async def chat(engine: LlamaCppEngine, seed: int) -> tuple[float, float]:
    async def user(u: int) -> list[float]:
        rng = random.Random(seed * 100 + u)
        messages: list[ChatMessage] = []
        ttfts = []
        for turn in range(4):
            messages.append(ChatMessage("user", "Tell me about " + words(rng, 40)))
            text, ttft, _ = await generate(
                engine, request(f"c{seed}-{u}-{turn}", messages, 64, False)
            )
            messages.append(ChatMessage("assistant", text))
            ttfts.append(ttft)
        return ttfts

    start = time.perf_counter()
    runs = await asyncio.gather(*(user(u) for u in range(8)))
    return statistics.median(t for r in runs for t in r), time.perf_counter() - start


async def answers(engine: LlamaCppEngine, seed: int) -> tuple[int, int]:
    """Answers that differ from the alone-and-uncached one: in a batch, and cached."""
    rng = random.Random(seed)
    prompts = [[ChatMessage("user", "Explain " + words(rng, 30))] for _ in range(STREAMS)]
    # Each prompt's first sending is cold: nothing of it is cached yet.
    alone = [(await generate(engine, request(f"a{seed}-{i}", p, 48, False)))[0] for i, p in enumerate(prompts)]  # fmt: skip
    # All at once (different prompts, so no cached prefix helps them fill the slots alike);
    # half of them start while the other half decodes.
    first = [asyncio.ensure_future(generate(engine, request(f"b{seed}-{i}", p, 48, False))) for i, p in enumerate(prompts[:16])]  # fmt: skip
    deadline = time.monotonic() + 60
    while engine.stats().running < 16 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    rest = [generate(engine, request(f"b{seed}-{i}", p, 48, False)) for i, p in enumerate(prompts[16:], 16)]  # fmt: skip
    batched = [r[0] for r in await asyncio.gather(*first, *rest)]
    cached = [(await generate(engine, request(f"c{seed}-{i}", p, 48, False)))[0] for i, p in enumerate(prompts)]  # fmt: skip
    return (
        sum(a != b for a, b in zip(alone, batched, strict=True)),
        sum(a != c for a, c in zip(alone, cached, strict=True)),
    )


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


async def measure(args: argparse.Namespace) -> None:
    engines = {}
    for deterministic in (False, True):
        settings = EngineSettings(
            slots=STREAMS, context_per_slot=1024, threads=args.threads, deterministic=deterministic
        )
        engines[deterministic] = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), settings)
        engines[deterministic].start()
    results: dict[bool, dict[str, list[float]]] = {
        k: {"tok/s": [], "ttft": [], "chat": [], "batched": [], "cached": []} for k in engines
    }
    try:
        for rep in range(args.repeat):
            for deterministic, engine in engines.items():
                r = results[deterministic]
                r["tok/s"].append(await decode_heavy(engine, rep))
                ttft, wall = await chat(engine, rep)
                r["ttft"].append(ttft * 1000)
                r["chat"].append(wall)
                batched, cached = await answers(engine, rep)
                r["batched"].append(batched)
                r["cached"].append(cached)
                print(
                    f"round {rep + 1} deterministic={deterministic!s:5} "
                    f"decode {r['tok/s'][-1]:6.1f} tok/s | chat TTFT p50 {ttft * 1000:5.0f} ms, "
                    f"{wall:5.1f} s | answers differing: batched {batched}/{STREAMS}, "
                    f"cached {cached}/{STREAMS}",
                    flush=True,
                )
    finally:
        for engine in engines.values():
            engine.shutdown()
    print(f"\nmedians (min-max) over {args.repeat} rounds, {args.threads} threads")
    for deterministic, r in results.items():
        print(
            f"deterministic={deterministic!s:5} decode {spread(r['tok/s'], '.1f')} tok/s | "
            f"chat TTFT p50 {spread(r['ttft'], '.0f')} ms, wall {spread(r['chat'], '.1f')} s | "
            f"differing answers: batched {sum(r['batched']):.0f}/{STREAMS * args.repeat}, "
            f"cached {sum(r['cached']):.0f}/{STREAMS * args.repeat}"
        )
    on, off = results[True], results[False]
    ratio = statistics.median(on["tok/s"]) / statistics.median(off["tok/s"])
    chat_ratio = statistics.median(on["chat"]) / statistics.median(off["chat"])
    ttft_ratio = statistics.median(on["ttft"]) / statistics.median(off["ttft"])
    print(
        f"on/off: decode tok/s x{ratio:.3f}, chat wall time x{chat_ratio:.3f}, "
        f"chat TTFT p50 x{ttft_ratio:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
