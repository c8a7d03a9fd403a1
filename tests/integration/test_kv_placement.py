"""Running sequences sit in consecutive slots, and KV caches move out of their way intact.

llama.cpp decodes in one pass only sequences whose slot ids follow one another, so the slot
table places a new sequence beside the running ones and copies caches between slots (slots.py).
These tests check the copies with the real model: a moved cache is bit for bit the one it was
(the next token's logits are equal), and a conversation whose history was moved twice answers as
it does without any cache.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Iterator

import llama_cpp as C
import pytest

from sovllm.engines.base import GenerationRequest, SamplingParams
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
from sovllm.engines.llamacpp.settings import EngineSettings
from tests.conftest import MODEL_ID, wait_until_async


class Decoder:
    """One llama_decode call at a time, every token's logits kept."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.batch = C.llama_batch_init(model.n_batch, 0, 1)

    def run(self, slot: int, tokens: list[int], start: int) -> list[float]:
        """Decode `tokens` at positions start.. in `slot`; the last one's logits."""
        for n, tok in enumerate(tokens):
            self.batch.token[n] = tok
            self.batch.pos[n] = start + n
            self.batch.n_seq_id[n] = 1
            self.batch.seq_id[n][0] = slot
            self.batch.logits[n] = n == len(tokens) - 1
        self.batch.n_tokens = len(tokens)
        assert C.llama_decode(self.model.ctx, self.batch) == 0
        logits = C.llama_get_logits_ith(self.model.ctx, len(tokens) - 1)
        return list(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float))[: self.model.n_vocab])

    def close(self) -> None:
        C.llama_batch_free(self.batch)


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    llm = LlamaModel(resolve_model(MODEL_ID).path, ContextShape(3, 256, 64, 2))
    try:
        yield llm
    finally:
        llm.close()


PLAIN = {"add_special": True, "parse_special": False}


def positions(model: LlamaModel, slot: int) -> tuple[int, int]:
    return (
        C.llama_memory_seq_pos_min(model.memory, slot),
        C.llama_memory_seq_pos_max(model.memory, slot),
    )


def test_a_copied_cache_continues_as_the_original_and_two_pairs_swap(model: LlamaModel) -> None:
    decoder = Decoder(model)
    try:
        first = model.tokenize("The harbour at dawn was quiet, and", **PLAIN)
        second = model.tokenize("Seven rivers cross the plain", **PLAIN)
        for slot in range(3):
            model.clear_slot(slot)
        decoder.run(0, first, 0)
        decoder.run(1, second, 0)
        # Slot 0's cache into the empty slot 2, and slot 2's (nothing) into slot 0: a swap.
        assert model.copy_slots(((0, 2), (2, 0))) is None
        assert positions(model, 2) == (0, len(first) - 1)
        assert positions(model, 0) == (-1, -1)
        assert positions(model, 1) == (0, len(second) - 1)
        moved = decoder.run(2, [42], len(first))
        # The same computation on a cache built in place.
        decoder.run(0, first, 0)
        assert decoder.run(0, [42], len(first)) == moved
        # Two full caches swap: all are read before any is written.
        model.trim_slot(0, len(first))
        assert model.copy_slots(((0, 1), (1, 0))) is None
        assert positions(model, 0) == (0, len(second) - 1)
        assert positions(model, 1) == (0, len(first) - 1)
    finally:
        decoder.close()


def completion(rid: str, prompt: str, tokens: int) -> GenerationRequest:
    # Completion prompts: no chat template, so no shared system prompt between them.
    sampling = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    return GenerationRequest(rid, sampling, prompt=prompt)


async def answer(engine: LlamaCppEngine, req: GenerationRequest) -> str:
    return "".join([out.text async for out in engine.submit(req)])


def exact_engine(slots: int, prefix_cache: bool) -> LlamaCppEngine:
    settings = EngineSettings(
        slots=slots, context_per_slot=512, deterministic=True, prefix_cache=prefix_cache
    )
    engine = LlamaCppEngine(resolve_model(MODEL_ID), settings)
    engine.start()
    return engine


HISTORY = (
    "A ferry leaves the northern harbour every morning at six, crosses the bay in forty "
    "minutes and returns before noon; in winter storms it stays in port, and the islanders"
)
FILLER = [  # each longer than MIN_REUSE tokens, sharing no prefix with another
    "The committee met on Tuesday to discuss the budget for the new library wing, the repairs "
    "to the roof of the town hall, and the plan to open the swimming pool in May, and",
    "Rain fell across the valley for three days, the river rose above its banks, the bridge "
    "to the village was closed, and the farmers moved their cattle to the higher fields so",
    "The old clockmaker opened his shop at eight, wound every clock on the wall, swept the "
    "floor, set out his tools on the bench by the window, and waited for the first customer",
]


class Scenario:
    """A 4-slot exact engine whose copies are recorded (the real copies still run, unless
    `fail_next` makes the next one fail), and a history cached where the next turn must move it.
    """

    def __init__(self) -> None:
        self.engine = exact_engine(4, True)
        self.copied: list[tuple[tuple[int, int], ...]] = []
        self.fail_next = False
        llm = self.engine._llm
        assert llm is not None
        copy_slots = llm.copy_slots

        def record(pairs: tuple[tuple[int, int], ...]) -> int | None:
            self.copied.append(pairs)
            if self.fail_next:  # as llama_state_seq_set_data refusing the first pair
                self.fail_next = False
                return pairs[0][1]
            return copy_slots(pairs)

        llm.copy_slots = record  # type: ignore[method-assign]
        self.tasks: list[asyncio.Task[str]] = []

    def slot_of(self, rid: str) -> int | None:
        running = self.engine.scheduler.running
        return next((s.slot for s in running if s.request_id == rid), None)

    async def start(self, rid: str, prompt: str) -> asyncio.Task[str]:
        task = asyncio.create_task(answer(self.engine, completion(rid, prompt, 400)))
        await wait_until_async(lambda: self.slot_of(rid) is not None, f"{rid} running")
        self.tasks.append(task)
        return task

    async def history_away_from_the_running(self) -> GenerationRequest:
        """Runs b, x, the history's first turn, then y; stops x. The next turn, returned, finds
        its history in slot 3 while slot 1 joins the running slots 0 and 2."""
        await self.start("b", FILLER[0])
        x = await self.start("x", FILLER[1])
        assert (self.slot_of("b"), self.slot_of("x")) == (0, 1)
        turn1 = await answer(self.engine, completion("turn1", HISTORY, 24))  # in slot 2
        # Slot 2 is beside the running ones: y runs there, the history moves to slot 3.
        await self.start("y", FILLER[2])
        assert self.slot_of("y") == 2 and self.copied == [((2, 3),)]
        x.cancel()
        await wait_until_async(lambda: self.slot_of("x") is None, "x gone")
        return completion("turn2", HISTORY + turn1 + " Later that year", 24)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.engine.shutdown()


@pytest.fixture
def fresh() -> Iterator[LlamaCppEngine]:
    """The reference: one slot, no prefix cache."""
    engine = exact_engine(1, False)
    try:
        yield engine
    finally:
        engine.shutdown()


@pytest.fixture
def scenario() -> Iterator[Scenario]:
    s = Scenario()
    try:
        yield s
    finally:
        s.close()


async def hits_while(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[str, int]:
    before = engine.stats().prefix_cache_hits
    text = await answer(engine, req)
    return text, engine.stats().prefix_cache_hits - before


async def test_a_history_moved_out_of_the_way_and_swapped_back_answers_as_uncached(
    scenario: Scenario, fresh: LlamaCppEngine
) -> None:
    engine = scenario.engine
    turn2 = await scenario.history_away_from_the_running()
    # Slot 1 joins two runs: the history is swapped into it, x's cache into slot 3.
    text, hits = await hits_while(engine, turn2)
    assert scenario.copied[1:] == [((3, 1), (1, 3))]
    assert hits >= engine.count_tokens(completion("", HISTORY, 1)) - 2
    assert text == await answer(fresh, turn2)
    # x's cache, moved into slot 3, is what x's prompt computes.
    again = completion("x2", FILLER[1], 8)
    text, hits = await hits_while(engine, again)
    assert hits >= engine.count_tokens(again) - 2
    assert text == await answer(fresh, again)


async def test_a_failed_copy_fails_its_step_and_leaves_no_cache_the_table_misreads(
    scenario: Scenario, fresh: LlamaCppEngine
) -> None:
    engine = scenario.engine
    turn2 = await scenario.history_away_from_the_running()
    scenario.fail_next = True
    outs = [out async for out in engine.submit(turn2)]
    assert outs[-1].finish_reason == "error" and "copy" in (outs[-1].error or "")
    # Both slots of the swap are empty now, though the table had x's cache moved into slot 3
    # (which still holds the history): x's prompt and the turn are computed again, right.
    again = completion("x2", FILLER[1], 8)
    text, hits = await hits_while(engine, again)
    assert hits == 0
    assert text == await answer(fresh, again)
    text, hits = await hits_while(engine, turn2)
    assert hits == 0
    assert text == await answer(fresh, turn2)
    assert engine.healthy
