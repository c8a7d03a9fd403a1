"""The slots and their KV caches: nano-vllm's block manager, at the grain of a whole slot.

A slot is a llama.cpp sequence id with a KV buffer of its own. A finished sequence leaves its
cache in its slot (prefix caching): a new sequence takes the free slot whose cached tokens share
the longest prefix with its prompt, and prefills only the rest. The next turn of a chat (earlier
turns + answer + new message) thus skips most of its prefill.

A prefix is reused only by a sequence of the same owner (the tenant) as the one that left it:
otherwise a tenant could learn from its speed, or from `cached_tokens`, what another sent.

A slot is also a place: llama.cpp decodes in one pass (one ubatch, the weights read once) only
sequences whose slot ids follow one another, so each gap between running slots costs every
step another pass over the weights (measured on 2 cores: 8 streams in 4 runs of slots decode at
0.42 times the speed of 8 in one; benchmarks/slot_layout.py). A new sequence therefore runs
next to the running ones, and the caches move out of its way: the cache it reuses is copied to
where it runs, and the cache that was there is copied over the least recently used one, which
is what eviction would have dropped anyway. A move copies one slot's KV cache: 2 ms for 128
cached tokens, 34 ms for 2,000 here, against a gap's 10 to 20 ms on every step it lasts.

`exact` reuse (the engine's `deterministic` setting) keeps a reused cache bit for bit what a
fresh prefill would build. llama.cpp's CPU kernels round a token computed alone in its ubatch
(a decode step) differently from one computed beside others of its sequence (a prompt chunk):
so only positions a prompt chunk computed are reused (not the previous answer, which was
decoded token by token), and at least the prompt's last two tokens are computed again, never
a chunk of one. docs/performance.md has the measurement.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

MIN_REUSE = 32
"""Shorter shared prefixes (a system prompt) are cheap to recompute: not worth evicting a
cached conversation for while a less useful slot is free."""


@dataclass(frozen=True)
class _Cache:
    tokens: list[int]
    """What the slot's KV cache holds, position by position."""
    owner: str
    """Whose request left it there."""
    prefilled: int
    """Its first positions that a prompt chunk computed (the rest were decoded)."""


_EMPTY = _Cache([], "", 0)


class Taken(NamedTuple):
    slot: int
    keep: int
    """Cached tokens the new sequence reuses: positions 0..keep-1 of the slot's cache."""
    trim: bool
    """Whether the slot's cache holds more than `keep` positions, to be cut before use."""
    copies: tuple[tuple[int, int], ...] = ()
    """(from, to): slots' whole KV caches to copy before use, all read before any is written
    (two pairs swap two caches)."""


class SlotTable:
    """Free slots, least recently used first, with what each one's KV cache holds.

    The order is the eviction order and is kept explicitly in an OrderedDict: `release()` puts
    a slot at the end (the most recently used), `release_empty()` at the front (an empty slot
    evicts nothing, so it is the first to take). Without a useful prefix, `take()` gives the
    front slot; among equally long prefixes, the one nearest the front.
    """

    def __init__(self, slots: int, prefix_cache: bool = True, exact: bool = False) -> None:
        self.size = slots
        self.prefix_cache = prefix_cache
        self.exact = exact
        self._free: OrderedDict[int, _Cache] = OrderedDict((s, _EMPTY) for s in range(slots))
        self.queries = 0
        """Prompt tokens of admitted new sequences (looked up in the cache)."""
        self.hits = 0
        """Of those, tokens found in a slot's cache and not computed again."""

    def __len__(self) -> int:
        """Free slots."""
        return len(self._free)

    def __bool__(self) -> bool:
        return bool(self._free)

    def take(self, prompt: list[int], owner: str, reuse: bool = True) -> Taken:
        """Give a free slot next to the running ones, with the longest cached prefix of
        `prompt` left by `owner` in it; say how much of its cache the new sequence keeps.

        Where: the free slot with the most running neighbours (joining two runs, else
        extending one), the reused cache's own slot among equals, else the least recently used.
        Which cache: the longest prefix, else what the chosen slot holds (a short shared
        prefix, a system prompt, is still kept).

        `reuse=False` for a sequence that brings its own cache back (a preempted one): any slot
        will do, and its cache is cleared.
        """
        assert self._free, "take() needs a free slot"
        look = self.prefix_cache and reuse
        shared = (
            {s: self._reusable(c, prompt, owner) for s, c in self._free.items()} if look else {}
        )
        source = max(shared, key=shared.__getitem__) if shared else None  # first max: LRU
        if source is not None and shared[source] < MIN_REUSE:
            source = None
        gains = {s: self._gain(s) for s in self._free}
        top = max(gains.values())
        if source is not None and gains[source] == top:
            slot = source
        else:
            slot = next(s for s in self._free if gains[s] == top)
        hit = source is not None
        if source is None:
            source = slot
        cached = self._free[source]
        keep = 0
        if look:
            # The prompt's last token is computed again: sampling needs its logits (exact
            # reuse: its last two, as one chunk).
            keep = max(min(shared[source], len(prompt) - (2 if self.exact else 1)), 0)
            self.queries += len(prompt)
            self.hits += keep
        copies: list[tuple[int, int]] = []
        lru = next(iter(self._free))
        if source != slot:
            copies.append((source, slot))
            if self._free[slot].tokens:  # a swap: no cache is lost
                copies.append((slot, source))
                self._move(slot, source)
            else:  # what stays behind is a prefix of what `slot` will hold: evict it first
                self._free.move_to_end(source, last=False)
        elif self.prefix_cache and not hit and slot != lru and self._free[slot].tokens:
            # Not the cache eviction would drop: it lives on in place of the LRU one.
            copies.append((slot, lru))
            self._move(slot, lru)
        self._free.pop(slot, None)
        return Taken(slot, keep, len(cached.tokens) > keep, tuple(copies))

    def _gain(self, slot: int) -> int:
        """Running slots beside a free one: 2 if taking it joins two runs, 1 if it extends
        one, 0 if it starts a run of its own."""
        return sum(0 <= n < self.size and n not in self._free for n in (slot - 1, slot + 1))

    def _move(self, slot: int, to: int) -> None:
        """`slot`'s cache is copied over `to`'s: `to` now holds it, in `slot`'s place in the
        eviction order."""
        self._free = OrderedDict(
            (to, c) if s == slot else (s, c) for s, c in self._free.items() if s != to
        )

    def _reusable(self, cache: _Cache, prompt: list[int], owner: str) -> int:
        if cache.owner != owner:
            return 0
        shared = common_prefix(cache.tokens, prompt)
        return min(shared, cache.prefilled) if self.exact else shared

    def release(
        self, slot: int, tokens: list[int], owner: str, prefilled: int | None = None
    ) -> None:
        """A slot is free again, its cache holding `tokens` for `owner`, the first `prefilled`
        of them (all by default) computed by prompt chunks: the most recently used."""
        done = len(tokens) if prefilled is None else prefilled
        self._free[slot] = _Cache(tokens, owner, done)
        self._free.move_to_end(slot)

    def release_empty(self, slot: int) -> None:
        """A slot is free again with an empty (or cleared) cache: the first to take."""
        self._free[slot] = _EMPTY
        self._free.move_to_end(slot, last=False)

    def forget(self, slot: int) -> None:
        """What a free slot's cache held is lost (a copy into it failed): it holds nothing."""
        if slot in self._free:
            self.release_empty(slot)

    def order(self) -> list[int]:
        """The free slots, in the order they are evicted."""
        return list(self._free)


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
