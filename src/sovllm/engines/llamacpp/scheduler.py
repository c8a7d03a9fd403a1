"""Which tokens go into the next llama_decode step.

Every step decodes one token for each running sequence, then spends what is left of the
step's token budget on prompt chunks (chunked prefill): first of sequences already
prefilling, then of waiting sequences admitted into free slots. A long prompt thus never
stalls the sequences that are already generating.

Waiting sequences wait in a `FairQueue` (fair_queue.py), and a new one takes the slot that
`SlotTable` (slots.py) picks for it, with the prefix of its prompt that slot's cache holds.
When a flow waits below its weighted share of the slots while another holds more than its
share, the scheduler preempts the newest sequence of the flow furthest over its share (as
vLLM's swap preemption does). With a single flow the scheduler is plain FIFO and never preempts.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from sovllm.engines.base import QueueFullError
from sovllm.engines.llamacpp.fair_queue import FairQueue
from sovllm.engines.llamacpp.sequence import Sequence, Status
from sovllm.engines.llamacpp.slots import SlotTable


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
    swapped_out: list[tuple[Sequence, int]] = field(default_factory=list)
    """Preempted sequences and the slots they left: save then clear those KV caches first."""
    swapped_in: list[Sequence] = field(default_factory=list)
    """Resumed sequences: restore their saved KV caches into their new slots, then run."""
    copies: list[tuple[tuple[int, int], ...]] = field(default_factory=list)
    """Groups of (from, to) whole-cache copies that put reused caches where their sequences
    run (`Taken.copies`), one group per admitted sequence, in order, after swapping out."""
    trims: list[tuple[int, int]] = field(default_factory=list)
    """(slot, keep): cut a reused or evicted slot's KV cache to its first `keep` positions,
    after the copies and before swapping in."""

    @property
    def num_tokens(self) -> int:
        return sum(len(item.tokens) for item in self.items)


class Scheduler:
    """The waiting queue, the running sequences and the slots; `schedule()` plans a step.

    Its settings are final when it is built: the engine builds it once the model is loaded,
    when it knows the real batch size and whether the model's caches can be cut.
    """

    def __init__(
        self,
        slots: int,
        step_tokens: int,
        max_waiting: int,
        preempt: bool = True,
        prefix_cache: bool = True,
        exact: bool = False,
    ) -> None:
        self.step_tokens = step_tokens
        self.max_waiting = max_waiting
        self.preempt = preempt
        self.exact = exact
        """Prompt chunks of at least two tokens, and exact prefix reuse (slots.py)."""
        self.waiting = FairQueue()
        self.running: list[Sequence] = []
        self.slots = SlotTable(slots, prefix_cache, exact)
        self._completions: deque[float] = deque(maxlen=64)
        self.preemptions = 0

    @property
    def free_slots(self) -> int:
        return len(self.slots)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a sequence, or refuse it when the bounded queue is full."""
        if len(self.waiting) >= self.max_waiting + len(self.slots):
            raise QueueFullError(len(self.waiting), self.retry_after_s())
        self.waiting.push(seq)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained, from the recent rate of finishes."""
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
        if self.preempt:
            self._preempt_for_fairness(step)
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
        while budget > 0 and self.waiting and self.slots:
            seq = self.waiting.pop(self._under_share() if self.preempt else frozenset())
            self._take_slot(step, seq)
            self.running.append(seq)
            if seq.resume_as is not None:  # a preempted sequence: its cache comes back as is
                seq.status, seq.resume_as = seq.resume_as, None
                step.swapped_in.append(seq)
                if seq.status is Status.DECODE:
                    step.items.append(StepItem(seq, [seq.last_token], seq.n_computed, True))
                    budget -= 1
                    continue
            else:
                seq.status = Status.PREFILL
            if seq.scheduled_at is None:
                seq.scheduled_at = now
            budget -= self._prefill(step, seq, budget)
        return step

    def _take_slot(self, step: Step, seq: Sequence) -> None:
        """Give `seq` the slot the table picks, and cut that slot's cache to what it reuses."""
        # A resumed sequence brings its own cache back: it reuses nothing.
        slot, keep, trim, copies = self.slots.take(
            seq.prompt, seq.owner, reuse=seq.resume_as is None
        )
        if seq.resume_as is None:
            seq.n_computed = seq.cached_tokens = keep
        if copies:
            step.copies.append(copies)
        if trim:
            step.trims.append((slot, keep))
        seq.slot = slot

    def _prefill(self, step: Step, seq: Sequence, budget: int) -> int:
        size = min(seq.remaining_prompt, budget)
        if self.exact:
            size = exact_chunk(seq.remaining_prompt, size)
            if size == 0:
                return 0
        chunk = seq.next_prompt_chunk(size)
        last = seq.n_computed + len(chunk) >= seq.prompt_len
        step.items.append(StepItem(seq, chunk, seq.n_computed, last))
        return len(chunk)

    def _excess(self) -> dict[str, float]:
        """Slots each active flow holds beyond its weighted share (negative: below it)."""
        weights = {s.flow: s.weight for s in self.running}
        weights |= {s.flow: s.weight for s in self.waiting}
        total = sum(weights.values())
        excess = {flow: -self.slots.size * w / total for flow, w in weights.items()}
        for s in self.running:
            excess[s.flow] += 1
        return excess

    def _under_share(self) -> set[str]:
        excess = self._excess()
        return {flow for flow in self.waiting.flows() if excess[flow] < 0}

    def _preempt_for_fairness(self, step: Step) -> None:
        """Free one slot when a waiting flow is below its share and another well above it."""
        if self.slots or not self.waiting:
            return
        excess = self._excess()
        if len(excess) < 2 or not any(excess[f] < 0 for f in self.waiting.flows()):
            return
        victim_flow = max(excess, key=lambda f: excess[f])
        # Only a flow a whole slot over its share gives one up: otherwise the two would swap
        # the slot back and forth.
        if excess[victim_flow] >= 1:
            victim = next(s for s in reversed(self.running) if s.flow == victim_flow)
            self._preempt(victim, step)

    def _preempt(self, seq: Sequence, step: Step) -> None:
        self.running.remove(seq)
        assert seq.slot is not None
        step.swapped_out.append((seq, seq.slot))
        self.slots.release_empty(seq.slot)  # its cache is saved, then cleared
        seq.slot = None
        seq.resume_as, seq.status = seq.status, Status.WAITING
        self.waiting.push_front(seq)
        self.preemptions += 1

    def _drop_cancelled(self, step: Step) -> None:
        step.released.extend(self.waiting.drop_cancelled())
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

    def release(self, seq: Sequence, cache_valid: bool = True) -> None:
        """Give a finished or cancelled sequence's slot back, with its KV cache for reuse
        unless the engine has cleared it (`cache_valid=False`: a failed step)."""
        if seq in self.running:
            self.running.remove(seq)
            self._completions.append(time.perf_counter())
        if seq.slot is None:
            return
        if cache_valid:
            # What the cache holds: the last sampled token is not decoded yet, and a
            # cancelled prefill stopped part way.
            cached = (seq.prompt + seq.output)[: seq.n_computed]
            self.slots.release(seq.slot, cached, seq.owner, min(seq.n_computed, seq.prompt_len))
        else:
            self.slots.release_empty(seq.slot)
        seq.slot = None


def exact_chunk(remaining: int, size: int) -> int:
    """The size of a prompt chunk that llama.cpp computes as a fresh prefill would: a token
    alone in its ubatch rounds differently from one beside others of its prompt, so a chunk is
    never one token long (but for a one-token prompt), and never leaves one token for later.
    0: wait for a larger budget."""
    if size < remaining and remaining - size == 1:
        size -= 1
    return 0 if size == 1 and remaining > 1 else size
