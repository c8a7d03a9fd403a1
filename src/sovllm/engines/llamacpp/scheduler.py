"""Which tokens go into the next llama_decode step.

Every step decodes one token for each running sequence, then spends what is left of the
step's token budget on prompt chunks (chunked prefill): first of sequences already
prefilling, then of waiting sequences admitted into free slots. A long prompt thus never
stalls the sequences that are already generating.

Waiting sequences are served by weighted fair queueing on tokens across flows (the gateway
names a request's tenant as its flow), so one flow's flood cannot starve another. When a flow
waits below its weighted share of the slots while another holds more than its share, the
scheduler preempts the newest sequence of the flow furthest over its share (as vLLM's swap
preemption does). With a single flow the scheduler is plain FIFO and never preempts.

A finished sequence leaves its KV cache in its slot (prefix caching): a new sequence takes the
free slot whose cached tokens share the longest prefix with its prompt, and prefills only the
rest. The next turn of a chat (earlier turns + answer + new message) thus skips most of its
prefill. Without a useful match it takes the least recently used free slot.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from sovllm.engines.base import QueueFullError
from sovllm.engines.llamacpp.sequence import Sequence, Status

MIN_REUSE = 32
"""Shorter shared prefixes (a system prompt) are cheap to recompute: not worth evicting a
cached conversation for while a less useful slot is free."""


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
    trims: list[tuple[int, int]] = field(default_factory=list)
    """(slot, keep): cut a reused or evicted slot's KV cache to its first `keep` positions,
    after swapping out and before swapping in."""

    @property
    def num_tokens(self) -> int:
        return sum(len(item.tokens) for item in self.items)


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
        pool = favoured or heads
        return min(pool, key=lambda s: s.finish_tag) if pool else None

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


class Scheduler:
    def __init__(
        self,
        slots: int,
        step_tokens: int,
        max_waiting: int,
        preempt: bool = True,
        prefix_cache: bool = True,
    ) -> None:
        self.num_slots = slots
        self.step_tokens = step_tokens
        self.max_waiting = max_waiting
        self.preempt = preempt
        self.prefix_cache = prefix_cache
        self.waiting = FairQueue()
        self.running: list[Sequence] = []
        self._free: dict[int, list[int]] = {slot: [] for slot in range(slots)}
        self._owners: dict[int, str] = {}
        """Whose request left each free slot's cache: a prefix is reused within a tenant only,
        so no tenant can learn from its own speed (or `cached_tokens`) what another sent."""
        """Free slots and the tokens in their KV caches, least recently used first."""
        self._completions: deque[float] = deque(maxlen=64)
        self.preemptions = 0
        self.prefix_queries = 0
        """Prompt tokens of admitted new sequences (looked up in the cache)."""
        self.prefix_hits = 0
        """Of those, tokens found in a slot's cache and not computed again."""

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a sequence, or refuse it when the bounded queue is full."""
        if len(self.waiting) >= self.max_waiting + len(self._free):
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
        while budget > 0 and self.waiting and self._free:
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
        """Give `seq` the free slot with the longest cached prefix of its prompt, else the
        least recently used one; cut that slot's cache to what `seq` reuses."""
        slot = next(iter(self._free))
        keep = 0
        # A resumed sequence brings its own cache back: any slot will do.
        if self.prefix_cache and seq.resume_as is None:
            shared = {
                s: common_prefix(cached, seq.prompt) if self._owners.get(s) == seq.owner else 0
                for s, cached in self._free.items()
            }
            best = max(shared, key=lambda s: shared[s])  # the first max: least recently used
            if shared[best] >= MIN_REUSE:
                slot = best
            # The prompt's last token is computed again: sampling needs its logits.
            keep = min(shared[slot], seq.prompt_len - 1)
            seq.n_computed = seq.cached_tokens = keep
            self.prefix_queries += seq.prompt_len
            self.prefix_hits += keep
        if len(self._free.pop(slot)) > keep:
            step.trims.append((slot, keep))
        seq.slot = slot

    def _prefill(self, step: Step, seq: Sequence, budget: int) -> int:
        chunk = seq.next_prompt_chunk(budget)
        last = seq.n_computed + len(chunk) >= seq.prompt_len
        step.items.append(StepItem(seq, chunk, seq.n_computed, last))
        return len(chunk)

    def _excess(self) -> dict[str, float]:
        """Slots each active flow holds beyond its weighted share (negative: below it)."""
        weights = {s.flow: s.weight for s in self.running}
        weights |= {s.flow: s.weight for s in self.waiting}
        total = sum(weights.values())
        excess = {flow: -self.num_slots * w / total for flow, w in weights.items()}
        for s in self.running:
            excess[s.flow] += 1
        return excess

    def _under_share(self) -> set[str]:
        excess = self._excess()
        return {flow for flow in self.waiting.flows() if excess[flow] < 0}

    def _preempt_for_fairness(self, step: Step) -> None:
        """Free one slot when a waiting flow is below its share and another well above it."""
        if self._free or not self.waiting:
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
        self._free_empty(seq.slot)  # its cache is saved, then cleared
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
            self._free[seq.slot] = (seq.prompt + seq.output)[: seq.n_computed]
            self._owners[seq.slot] = seq.owner
        else:
            self._free_empty(seq.slot)
        seq.slot = None

    def _free_empty(self, slot: int) -> None:
        """An empty slot is the first to take: it evicts nothing."""
        self._free = {slot: [], **self._free}


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share (binary search: list equality runs in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
