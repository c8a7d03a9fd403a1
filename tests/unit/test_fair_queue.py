"""The waiting queue: weighted fair queueing across flows, FIFO within one."""

from __future__ import annotations

from sovllm.engines.base import SamplingParams
from sovllm.engines.llamacpp.fair_queue import FairQueue
from sovllm.engines.llamacpp.sequence import Sequence


def seq(name: str, flow: str = "", weight: float = 1.0, prompt_len: int = 4) -> Sequence:
    s = Sequence(name, list(range(1, prompt_len + 1)), SamplingParams(), max_tokens=8)
    s.flow, s.weight = flow, weight
    return s


def drain(queue: FairQueue) -> list[str]:
    return [queue.pop().request_id for _ in range(len(queue))]


def test_one_flow_is_first_in_first_out() -> None:
    queue = FairQueue()
    for i in range(5):
        queue.push(seq(str(i), prompt_len=10 - i))  # cost differences do not reorder a flow
    assert drain(queue) == ["0", "1", "2", "3", "4"]
    assert not queue and len(queue) == 0


def test_a_light_flow_is_served_before_a_heavy_backlog() -> None:
    queue = FairQueue()
    for i in range(6):
        queue.push(seq(f"a{i}", "A"))
    queue.push(seq("b", "B"))
    order = drain(queue)
    # B's tag is one cost past the virtual time, level with A's first request.
    assert order.index("b") <= 1
    assert [r for r in order if r.startswith("a")] == [f"a{i}" for i in range(6)]


def test_weights_share_the_queue_in_proportion() -> None:
    queue = FairQueue()
    for i in range(30):
        queue.push(seq(f"a{i}", "A", weight=2.0))
        queue.push(seq(f"b{i}", "B", weight=1.0))
    first = [queue.pop().flow for _ in range(30)]
    assert first.count("A") == 20 and first.count("B") == 10


def test_a_flow_that_arrives_late_gets_no_credit_for_idle_time() -> None:
    queue = FairQueue()
    for i in range(4):
        queue.push(seq(f"a{i}", "A"))
    assert drain(queue) == ["a0", "a1", "a2", "a3"]
    # The virtual time has moved on: B's tags start from it, not from zero, so A and B
    # alternate (A first on equal tags: its flow came first) instead of B taking a burst
    # of the share it did not use while A was alone.
    for i in range(3):
        queue.push(seq(f"b{i}", "B"))
        queue.push(seq(f"a{i + 4}", "A"))
    assert drain(queue) == ["a4", "b0", "a5", "b1", "a6", "b2"]


def test_a_preempted_sequence_goes_back_to_the_head_of_its_flow() -> None:
    queue = FairQueue()
    first, second = seq("first", "A"), seq("second", "A")
    queue.push(first)
    queue.push(second)
    assert queue.pop() is first
    queue.push_front(first)  # preempted: it keeps its tag and its place
    assert len(queue) == 2
    assert drain(queue) == ["first", "second"]


def test_preferred_flows_are_served_first() -> None:
    queue = FairQueue()
    queue.push(seq("a", "A"))
    queue.push(seq("b", "B"))
    assert queue.peek() is not None and queue.peek().request_id == "a"  # type: ignore[union-attr]
    assert queue.pop(prefer={"B"}).request_id == "b"
    assert queue.pop(prefer={"B"}).request_id == "a"  # none of B waits: any flow
    assert queue.peek() is None


def test_cancelled_sequences_are_dropped() -> None:
    queue = FairQueue()
    seqs = [seq(f"a{i}", "A") for i in range(3)] + [seq("b", "B")]
    for s in seqs:
        queue.push(s)
    seqs[1].cancelled = seqs[3].cancelled = True
    assert queue.drop_cancelled() == [seqs[1], seqs[3]]
    assert len(queue) == 2 and queue.flows() == {"A"}
    assert drain(queue) == ["a0", "a2"]
    assert queue.drop_cancelled() == []
