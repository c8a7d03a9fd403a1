"""Waiting sequences, served by weighted fair queueing on tokens across flows.

The gateway names a request's tenant as its flow, so one tenant's flood cannot starve another:
each sequence gets a virtual finish tag (self-clocked fair queueing, SCFQ), its flow's last tag
or the queue's virtual time, whichever is later, plus its cost (prompt + max_tokens) divided by
its flow's weight; the smallest tag is served first. Within a flow the order is FIFO. With a
single flow the queue is plain FIFO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from sovllm.engines.llamacpp.sequence import Sequence


class FairQueue:
    """Waiting sequences ordered by virtual finish time (self-clocked fair queueing)."""

    def __init__(self) -> None:
        self._flows: dict[str, deque[Sequence]] = {}
        self._last_tag: dict[str, float] = {}
        self._vtime = 0.0
        self._size = 0

    def push(self, seq: Sequence) -> None:
        start = max(self._vtime, self._last_tag.get(seq.flow, 0.0))
        seq.finish_tag = start + seq.cost / seq.weight
        self._last_tag[seq.flow] = seq.finish_tag
        self._flows.setdefault(seq.flow, deque()).append(seq)
        self._size += 1

    def push_front(self, seq: Sequence) -> None:
        """Return a preempted sequence to the head of its flow, keeping its place."""
        self._flows.setdefault(seq.flow, deque()).appendleft(seq)
        self._size += 1

    def peek(self, prefer: set[str] | frozenset[str] = frozenset()) -> Sequence | None:
        """The head with the smallest tag, among the preferred flows' heads if any wait."""
        heads = [q[0] for q in self._flows.values() if q]
        favoured = [h for h in heads if h.flow in prefer]
        candidates = favoured or heads
        return min(candidates, key=lambda s: s.finish_tag) if candidates else None

    def pop(self, prefer: set[str] | frozenset[str] = frozenset()) -> Sequence:
        seq = self.peek(prefer)
        assert seq is not None
        self._flows[seq.flow].popleft()
        self._size -= 1
        self._vtime = max(self._vtime, seq.finish_tag)
        return seq

    def drop_cancelled(self) -> list[Sequence]:
        dropped = [s for s in self if s.cancelled]
        if dropped:
            for flow, q in self._flows.items():
                self._flows[flow] = deque(s for s in q if not s.cancelled)
            self._size -= len(dropped)
        return dropped

    def flows(self) -> set[str]:
        return {f for f, q in self._flows.items() if q}

    def clear(self) -> None:
        self._flows.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[Sequence]:
        for q in self._flows.values():
            yield from q
