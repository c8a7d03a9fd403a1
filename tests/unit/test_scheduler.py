"""The scheduler decides each step's tokens; no model is needed to check its rules."""

from __future__ import annotations

import pytest

from sovllm.engines.base import QueueFullError, SamplingParams
from sovllm.engines.llamacpp.scheduler import Scheduler, exact_chunk
from sovllm.engines.llamacpp.sequence import Sequence, Status


def seq(name: str, prompt_len: int, max_tokens: int = 8) -> Sequence:
    return Sequence(name, list(range(1, prompt_len + 1)), SamplingParams(), max_tokens)


def emit(s: Sequence, token: int = 7) -> None:
    s.append_token(token, b"x", is_eog=False, now=0.0)


def test_prompt_is_prefilled_in_chunks_under_the_step_budget() -> None:
    sched = Scheduler(slots=2, step_tokens=16, max_waiting=4)
    a = seq("a", 40)
    sched.add(a)
    sizes = []
    while a.status is not Status.DECODE:
        step = sched.schedule()
        assert step.num_tokens <= 16
        sizes.append(step.num_tokens)
        # Only the prompt's last chunk asks for logits.
        assert [i.wants_logits for i in step.items] == [a.n_computed + 16 >= 40]
        sched.advance(step)
    assert sizes == [16, 16, 8]
    assert a.n_computed == 40


def test_running_sequences_decode_before_new_prompts_prefill() -> None:
    sched = Scheduler(slots=3, step_tokens=10, max_waiting=4)
    a = seq("a", 4)
    sched.add(a)
    sched.advance(sched.schedule())
    emit(a)
    b = seq("b", 30)
    sched.add(b)
    step = sched.schedule()
    assert step.items[0].seq is a and step.items[0].tokens == [7]
    assert step.items[0].start_pos == 4
    # The decode token used one unit of budget; the prefill chunk gets the rest.
    assert step.items[1].seq is b and len(step.items[1].tokens) == 9


def test_waiting_requests_are_admitted_in_arrival_order_as_slots_free() -> None:
    sched = Scheduler(slots=1, step_tokens=64, max_waiting=4)
    a, b, c = seq("a", 4, max_tokens=1), seq("b", 4), seq("c", 4)
    for s in (a, b, c):
        sched.add(s)
    step = sched.schedule()
    assert [i.seq for i in step.items] == [a]
    assert sched.num_waiting == 2
    sched.advance(step)
    emit(a)
    assert a.status is Status.FINISHED
    sched.release(a)
    step = sched.schedule()
    assert [i.seq for i in step.items] == [b]
    assert b.slot == 0


def test_queue_is_bounded() -> None:
    sched = Scheduler(slots=1, step_tokens=64, max_waiting=2)
    sched.add(seq("a", 4))
    sched.advance(sched.schedule())  # a takes the slot
    sched.add(seq("b", 4))
    sched.add(seq("c", 4))
    with pytest.raises(QueueFullError) as err:
        sched.add(seq("d", 4))
    assert err.value.retry_after_s >= 1


def test_cancelled_sequences_leave_the_next_step() -> None:
    sched = Scheduler(slots=2, step_tokens=64, max_waiting=4)
    a, b, c = seq("a", 4), seq("b", 4), seq("c", 4)
    for s in (a, b):
        sched.add(s)
    sched.advance(sched.schedule())
    emit(a)
    emit(b)
    sched.add(c)
    a.cancelled = True
    c.cancelled = True
    step = sched.schedule()
    assert set(step.released) == {a, c}
    assert [i.seq for i in step.items] == [b]
    # a keeps its slot until the engine has cleared its cache and releases it.
    assert a.slot is not None
    sched.release(a)
    assert a.slot is None and sched.free_slots == 1


def test_retry_after_grows_with_the_queue_and_the_drain_rate() -> None:
    sched = Scheduler(slots=1, step_tokens=64, max_waiting=100)
    sched._completions.extend([0.0, 1.0, 2.0])  # one completion per second
    for i in range(10):
        sched.waiting.push(seq(str(i), 2))
    assert sched.retry_after_s() == 10


def flow_seq(name: str, flow: str, prompt_len: int = 4, max_tokens: int = 8) -> Sequence:
    s = seq(name, prompt_len, max_tokens)
    s.flow = flow
    return s


def test_a_flow_over_its_share_is_preempted_for_a_waiting_flow() -> None:
    sched = Scheduler(slots=4, step_tokens=64, max_waiting=100)
    flood = [flow_seq(f"a{i}", "A") for i in range(8)]
    for s in flood:
        sched.add(s)
    sched.advance(sched.schedule())
    for s in flood[:4]:
        emit(s)
    b = flow_seq("b", "B")
    sched.add(b)
    step = sched.schedule()
    # The newest A sequence gave up its slot, and B is prefilled in the same step.
    victim = flood[3]
    assert victim.status is Status.WAITING and victim.resume_as is Status.DECODE
    assert step.swapped_out == [(victim, b.slot)]
    assert b in [i.seq for i in step.items]
    assert sched.preemptions == 1
    # No thrashing: A at its share (3 of 4 while B waits for nothing) is left alone.
    sched.advance(step)
    emit(b)
    assert sched.schedule().swapped_out == []


def test_a_preempted_sequence_resumes_where_it_stopped() -> None:
    sched = Scheduler(slots=2, step_tokens=64, max_waiting=100)
    first, a = flow_seq("first", "A"), flow_seq("a", "A", prompt_len=5)
    sched.add(first)
    sched.add(a)
    sched.advance(sched.schedule())
    emit(first)
    emit(a, 11)
    sched.advance(sched.schedule())
    emit(first)
    emit(a, 12)
    b = flow_seq("b", "B")
    sched.add(b)
    step = sched.schedule()  # the newest A sequence (a) is preempted, b takes its slot
    assert a.status is Status.WAITING and b.slot is not None
    assert [s for s, _ in step.swapped_out] == [a]
    sched.advance(step)
    emit(first)
    emit(b)
    b.finish("stop")
    sched.release(b)
    step = sched.schedule()
    # Its KV cache is swapped back in, and it decodes its next token at once: no recompute.
    assert step.swapped_in == [a]
    resumed = next(i for i in step.items if i.seq is a)
    assert resumed.tokens == [12] and resumed.start_pos == 6 and resumed.wants_logits


def test_one_flow_is_never_preempted() -> None:
    sched = Scheduler(slots=2, step_tokens=64, max_waiting=100)
    seqs = [seq(str(i), 4) for i in range(5)]
    for s in seqs:
        sched.add(s)
    sched.advance(sched.schedule())
    for s in seqs[:2]:
        emit(s)
    assert sched.schedule().swapped_out == []
    assert sched.preemptions == 0


@pytest.mark.parametrize(
    ("remaining", "budget", "size"),
    [(40, 16, 16), (17, 16, 15), (2, 1, 0), (5, 1, 0), (1, 1, 1), (3, 2, 0), (3, 3, 3), (4, 3, 2)],
)
def test_an_exact_chunk_is_never_one_token_nor_leaves_one(
    remaining: int, budget: int, size: int
) -> None:
    assert exact_chunk(remaining, min(remaining, budget)) == size


def test_exact_prefill_chunks_under_a_budget_that_would_leave_one_token() -> None:
    sched = Scheduler(slots=2, step_tokens=16, max_waiting=4, exact=True)
    a = seq("a", 33)
    sched.add(a)
    sizes = []
    while a.status is not Status.DECODE:
        step = sched.schedule()
        sizes.append(step.num_tokens)
        sched.advance(step)
    # 16 + 16 would leave one token for a chunk of its own.
    assert sizes == [16, 15, 2]


def test_a_step_carries_the_cache_moves_of_the_sequences_it_admits() -> None:
    sched = Scheduler(slots=4, step_tokens=256, max_waiting=4)
    a, b, c = (
        Sequence(n, [k] * 40, SamplingParams(), 8) for n, k in (("a", 1), ("b", 2), ("c", 3))
    )
    for s in (a, b, c):
        sched.add(s)
    step = sched.schedule()
    assert [a.slot, b.slot, c.slot] == [0, 1, 2] and step.copies == []
    sched.advance(step)
    emit(b)
    sched.release(a)
    sched.release(c)
    d = Sequence("d", [4] * 40, SamplingParams(), 8)
    sched.add(d)
    step = sched.schedule()
    # d runs beside b, in a's slot; a's cache is copied over the never-used slot 3 first.
    assert d.slot == 0
    assert step.copies == [((0, 3),)]
    assert step.trims == [(0, 0)]
