"""Prefix caching through the scheduler: which free slot a new sequence takes, what it reuses,
and what the step tells the engine to cut (slots.py alone: test_slots.py)."""

from __future__ import annotations

from sovllm.engines.base import SamplingParams
from sovllm.engines.llamacpp.scheduler import Scheduler, Step
from sovllm.engines.llamacpp.sequence import Sequence, Status
from sovllm.engines.llamacpp.slots import MIN_REUSE

CHAT = list(range(1000, 1100))  # a conversation's first 100 tokens


def seq(name: str, prompt: list[int], flow: str = "") -> Sequence:
    s = Sequence(name, prompt, SamplingParams(), max_tokens=100)
    s.flow = flow
    return s


def admit(sched: Scheduler, s: Sequence) -> Step:
    """Queue `s` alone and schedule the step that admits it."""
    sched.add(s)
    step = sched.schedule()
    assert s.slot is not None
    return step


def serve(sched: Scheduler, output: list[int], *seqs: Sequence) -> None:
    """Run `seqs` side by side until each has sampled `output`, then free their slots."""
    for s in seqs:
        sched.add(s)
    sched.advance(sched.schedule())
    while any(s.status is Status.PREFILL for s in seqs):
        sched.advance(sched.schedule())
    for i, token in enumerate(output):
        if i:  # the token sampled before this one is decoded first
            sched.advance(sched.schedule())
        for s in seqs:
            s.append_token(token, b"x", is_eog=False, now=0.0)
    for s in seqs:
        s.finish("stop")
        sched.release(s)


def test_a_new_sequence_takes_the_slot_with_the_longest_cached_prefix() -> None:
    sched = Scheduler(slots=3, step_tokens=512, max_waiting=4)
    short, long = seq("short", [*CHAT[:40], 1, 2, 3]), seq("long", [*CHAT[:70], 4, 5, 6])
    serve(sched, [7], short, long)  # in slots 0 and 1
    serve(sched, [7], seq("other", list(range(2000, 2100))))  # in slot 2, the unused one
    long_slot = 1
    nxt = seq("next", [*CHAT, 8, 9])
    step = admit(sched, nxt)
    assert nxt.slot == long_slot
    # Its cache is cut to the shared 70 tokens, and only the rest is prefilled.
    assert step.trims == [(long_slot, 70)]
    assert nxt.n_computed == 70
    assert [(i.tokens, i.start_pos) for i in step.items] == [([*CHAT[70:], 8, 9], 70)]
    assert (sched.slots.queries, sched.slots.hits) == (43 + 73 + 100 + 102, 70)


def test_the_next_turn_reuses_the_previous_prompt_and_answer() -> None:
    sched = Scheduler(slots=2, step_tokens=512, max_waiting=4)
    turn1 = seq("turn1", CHAT)
    serve(sched, [50, 51, 52], turn1)
    # Prompt and answer, less the last sampled token: it was never decoded into the cache.
    turn2 = seq("turn2", [*CHAT, 50, 51, 52, 60, 61])
    step = admit(sched, turn2)
    assert turn2.n_computed == 102 and step.trims == []
    assert step.items[0].tokens == [52, 60, 61] and step.items[0].start_pos == 102


def test_a_whole_prompt_match_still_computes_the_last_token() -> None:
    sched = Scheduler(slots=1, step_tokens=512, max_waiting=4)
    serve(sched, [50, 51], seq("first", CHAT))
    again = seq("again", CHAT)
    step = admit(sched, again)
    # Sampling needs the last prompt token's logits: that token is computed again.
    assert again.n_computed == 99
    assert step.trims == [(0, 99)]
    item = step.items[0]
    assert item.tokens == [CHAT[-1]] and item.start_pos == 99 and item.wants_logits
    assert sched.slots.hits == 99


def test_unused_slots_go_first_then_the_least_recently_used() -> None:
    sched = Scheduler(slots=3, step_tokens=512, max_waiting=4)
    a = seq("a", list(range(100, 150)))
    b = seq("b", list(range(200, 250)))
    serve(sched, [7], a)
    serve(sched, [7], b)
    c = seq("c", list(range(300, 350)))
    step = admit(sched, c)
    assert (a.slot, b.slot) == (None, None)
    assert c.slot == 2 and step.trims == []  # the never used slot: nothing evicted
    sched.release(c)
    d = seq("d", list(range(400, 450)))
    step = admit(sched, d)
    # All hold a cache, none shares a prefix with d: the least recently used one (a's) goes.
    assert d.slot == 0 and step.trims == [(0, 0)]
    assert d.n_computed == 0


def test_a_short_shared_prefix_does_not_evict_a_conversation() -> None:
    system = list(range(10, 10 + MIN_REUSE - 1))  # shared by every chat, e.g. a system prompt
    sched = Scheduler(slots=2, step_tokens=512, max_waiting=4)
    serve(sched, [7], seq("a", system + list(range(100, 150))))
    b = seq("b", system + list(range(200, 250)))
    step = admit(sched, b)
    assert b.slot == 1 and step.trims == [] and b.n_computed == 0
    sched.release(b)
    # No slot is unused now: the least recently used one is evicted, but the prefix it
    # shares is kept.
    c = seq("c", system + list(range(300, 350)))
    step = admit(sched, c)
    assert c.slot == 0 and c.n_computed == len(system)
    assert step.trims == [(0, len(system))]


def test_a_cancelled_prefill_leaves_only_its_computed_tokens() -> None:
    sched = Scheduler(slots=1, step_tokens=30, max_waiting=4)
    a = seq("a", CHAT)
    sched.advance(admit(sched, a))  # 30 prompt tokens are in the cache
    a.cancelled = True
    step = sched.schedule()
    assert step.released == [a]
    sched.release(a)
    b = seq("b", CHAT)
    step = admit(sched, b)
    assert b.n_computed == 30 and step.trims == []
    assert step.items[0].start_pos == 30


def test_a_failed_step_leaves_an_empty_slot() -> None:
    sched = Scheduler(slots=2, step_tokens=512, max_waiting=4)
    serve(sched, [7], seq("a", list(range(100, 150))))  # slot 0 holds a's cache
    b = seq("b", CHAT)
    admit(sched, b)
    sched.release(b, cache_valid=False)  # the engine cleared slot 1
    c = seq("c", CHAT)
    step = admit(sched, c)
    # Nothing of b's cache is trusted, and the emptied slot is taken before a's.
    assert c.slot == 1 and c.n_computed == 0 and step.trims == []


def test_a_preempted_slot_is_empty_and_a_resumed_sequence_gets_a_cleared_slot() -> None:
    sched = Scheduler(slots=2, step_tokens=512, max_waiting=8)
    a1, a2 = seq("a1", CHAT, "A"), seq("a2", list(range(100, 150)), "A")
    sched.add(a1)
    sched.add(a2)
    sched.advance(sched.schedule())
    a1.append_token(7, b"x", is_eog=False, now=0.0)
    a2.append_token(7, b"x", is_eog=False, now=0.0)
    b = seq("b", [*CHAT, 1, 2], "B")
    sched.add(b)
    step = sched.schedule()
    # a2 is swapped out; b takes its slot, which holds nothing once a2's cache is saved and
    # cleared, though a2 shared nothing with b and a1 (running) shares all of CHAT.
    assert step.swapped_out == [(a2, 1)]
    assert b.slot == 1 and b.n_computed == 0 and step.trims == []
    sched.advance(step)
    b.append_token(7, b"x", is_eog=False, now=0.0)
    b.finish("stop")
    sched.release(b)  # slot 1 now caches CHAT + [1, 2]
    step = sched.schedule()
    # a2 resumes into slot 1 and brings its own cache: b's is cleared first, nothing reused.
    assert step.swapped_in == [a2] and a2.slot == 1
    assert step.trims == [(1, 0)]
    assert a2.n_computed == 50 and sched.slots.hits == 0


def test_switched_off_nothing_is_reused_or_counted() -> None:
    sched = Scheduler(slots=1, step_tokens=512, max_waiting=4, prefix_cache=False)
    serve(sched, [7], seq("a", CHAT))
    b = seq("b", [*CHAT, 1])
    step = admit(sched, b)
    assert b.n_computed == 0 and step.trims == [(0, 0)]  # the old cache is cleared
    assert (sched.slots.queries, sched.slots.hits) == (0, 0)


def test_a_prefix_is_reused_within_its_tenant_only() -> None:
    sched = Scheduler(slots=2, step_tokens=512, max_waiting=4)
    first = seq("a1", CHAT)
    first.owner = "hospital"
    serve(sched, [50], first)
    # Another tenant sending the same document reuses nothing: it could otherwise learn,
    # from its speed or its cached_tokens, what the first tenant sent.
    other = seq("b1", [*CHAT, 7])
    other.owner = "law-firm"
    admit(sched, other)
    assert other.n_computed == 0 and other.cached_tokens == 0
    same = seq("a2", [*CHAT, 7])
    same.owner = "hospital"
    admit(sched, same)
    assert same.cached_tokens == 100
