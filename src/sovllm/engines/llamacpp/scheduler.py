"""Which tokens go into the next llama_decode step.

Every step decodes one token for each running sequence, then spends what is left of the
step's token budget on prompt chunks (chunked prefill): first of sequences already
prefilling, then of waiting sequences admitted into free slots, oldest first. A long prompt
thus never stalls the sequences that are already generating.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from sovllm.engines.base import QueueFullError
from sovllm.engines.llamacpp.sequence import Sequence, Status


@dataclass(frozen=True)
class StepItem:
    seq: Sequence
    tokens: list[int]
    start_pos: int
    wants_logits: bool
    """True when this item's last token is sampled from (a decode, or a prompt's last chunk)."""


@dataclass
class Step:
    items: list[StepItem] = field(default_factory=list)
    released: list[Sequence] = field(default_factory=list)
    """Sequences cancelled since the last step: dropped from the queue or out of their slot."""

    @property
    def num_tokens(self) -> int:
        return sum(len(item.tokens) for item in self.items)


class Scheduler:
    def __init__(self, slots: int, step_tokens: int, max_waiting: int) -> None:
        self.num_slots = slots
        self.step_tokens = step_tokens
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots: list[int] = list(range(slots - 1, -1, -1))
        self._completions: deque[float] = deque(maxlen=64)

    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a sequence, or refuse it when the bounded queue is full."""
        if len(self.waiting) >= self.max_waiting + len(self._free_slots):
            raise QueueFullError(len(self.waiting), self.retry_after_s())
        self.waiting.append(seq)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one slot's worth, from recent finishes."""
        if len(self._completions) < 2:
            return 1
        span = self._completions[-1] - self._completions[0]
        rate = (len(self._completions) - 1) / span if span > 0 else 0.0
        if rate <= 0:
            return 1
        return max(1, min(60, round(len(self.waiting) / rate)))

    def schedule(self) -> Step:
        step = Step()
        self._drop_cancelled(step)
        budget = self.step_tokens
        for seq in self.running:
            if seq.status is Status.DECODE:
                step.items.append(StepItem(seq, [seq.last_token], seq.n_computed, True))
                budget -= 1
        for seq in self.running:
            if budget <= 0:
                break
            if seq.status is Status.PREFILL:
                budget -= self._prefill(step, seq, budget)
        now = time.perf_counter()
        while budget > 0 and self.waiting and self._free_slots:
            seq = self.waiting.popleft()
            seq.slot = self._free_slots.pop()
            seq.status = Status.PREFILL
            seq.scheduled_at = now
            self.running.append(seq)
            budget -= self._prefill(step, seq, budget)
        return step

    def _prefill(self, step: Step, seq: Sequence, budget: int) -> int:
        chunk = seq.next_prompt_chunk(budget)
        last = seq.n_computed + len(chunk) >= seq.prompt_len
        step.items.append(StepItem(seq, chunk, seq.n_computed, last))
        return len(chunk)

    def _drop_cancelled(self, step: Step) -> None:
        if any(s.cancelled for s in self.waiting):
            step.released.extend(s for s in self.waiting if s.cancelled)
            self.waiting = deque(s for s in self.waiting if not s.cancelled)
        cancelled = [s for s in self.running if s.cancelled]
        if cancelled:
            # Out of the step, but still holding their slots until the engine has cleared
            # their KV cache and calls release().
            self.running = [s for s in self.running if not s.cancelled]
            step.released.extend(cancelled)

    def advance(self, step: Step) -> None:
        """The step ran: its tokens are now in the KV cache."""
        for item in step.items:
            seq = item.seq
            seq.n_computed += len(item.tokens)
            if seq.status is Status.PREFILL and seq.remaining_prompt == 0:
                seq.status = Status.DECODE

    def release(self, seq: Sequence) -> None:
        """Give a finished or cancelled sequence's slot back."""
        if seq in self.running:
            self.running.remove(seq)
            self._completions.append(time.perf_counter())
        if seq.slot is not None:
            self._free_slots.append(seq.slot)
            seq.slot = None
