"""The slot table: which free slot a new sequence takes, what it keeps, what is evicted."""

from __future__ import annotations

from sovllm.engines.llamacpp.slots import MIN_REUSE, SlotTable, Taken, common_prefix

CHAT = list(range(1000, 1100))  # a conversation's first 100 tokens


def all_taken(slots: int) -> SlotTable:
    """A table whose every slot runs a sequence (slot s: the prompt [s] * 40)."""
    table = SlotTable(slots)
    for slot in range(slots):
        assert table.take([slot] * 40, "t").slot == slot
    return table


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([9], [1]) == 0
    assert common_prefix(CHAT, CHAT) == 100


def test_take_and_release_count_the_free_slots() -> None:
    table = SlotTable(2)
    assert len(table) == 2 and table.order() == [0, 1]
    first = table.take(list(range(50)), "t")
    second = table.take(list(range(50)), "t")
    assert (first.slot, second.slot) == (0, 1)
    assert len(table) == 0 and not table
    table.release(0, list(range(50)), "t")
    assert len(table) == 1 and table.order() == [0]


def test_released_slots_are_evicted_least_recently_used_first() -> None:
    table = SlotTable(3)
    for slot in (0, 1, 2):
        assert table.take([slot] * 40, "t").slot == slot
    # Released in the order 2, 0, 1: slot 2 has waited longest, so it goes first.
    for slot in (2, 0, 1):
        table.release(slot, [slot + 10] * 40, "t")
    assert table.order() == [2, 0, 1]
    unrelated = list(range(5000, 5040))
    assert table.take(unrelated, "t") == Taken(slot=2, keep=0, trim=True)
    # The next runs beside slot 2, in slot 1; slot 1's cache is not the least recently used:
    # it is copied over slot 0's, which is.
    assert table.take(unrelated, "t") == Taken(slot=1, keep=0, trim=True, copies=((1, 0),))
    assert table.order() == [0]
    assert table.take([11] * 40, "t") == Taken(slot=0, keep=39, trim=True)
    # A slot used again moves to the back of the line.
    table.release(0, unrelated, "t")
    table.release(1, [7] * 40, "t")
    assert table.order() == [0, 1]


def test_a_new_sequence_fills_the_gap_between_running_ones() -> None:
    # llama.cpp decodes consecutive slots in one pass over the weights: a gap costs a pass.
    table = SlotTable(6)
    for slot in range(4):
        assert table.take([slot] * 40, "t").slot == slot
    table.release(1, [1] * 40, "t")
    assert table.order() == [4, 5, 1]
    # Slot 1 joins the runs 0 and 2-3; its cache moves over the least recently used slot's.
    assert table.take([9] * 40, "t") == Taken(slot=1, keep=0, trim=True, copies=((1, 4),))
    assert table.order() == [5, 4]
    # Then slot 4 extends the run: the cache it holds is reused where it is.
    assert table.take([1] * 40 + [2], "t") == Taken(slot=4, keep=40, trim=False)


def test_a_reused_cache_is_moved_next_to_the_running_ones() -> None:
    table = all_taken(6)
    table.release(5, CHAT, "t")
    table.release(1, [1] * 40, "t")
    assert table.order() == [5, 1]
    # Slot 1 joins two runs: CHAT's cache is swapped into it, slot 1's into slot 5.
    taken = table.take([*CHAT, 7], "t")
    assert taken == Taken(slot=1, keep=100, trim=False, copies=((5, 1), (1, 5)))
    assert table.order() == [5]
    assert table.take([1] * 40 + [2], "t") == Taken(slot=5, keep=40, trim=False)


def test_a_reused_cache_is_copied_into_an_empty_slot() -> None:
    table = all_taken(6)
    table.release(5, CHAT, "t")
    table.release(3, [3] * 40, "t")
    table.release_empty(1)
    assert table.order() == [1, 5, 3]
    taken = table.take([*CHAT, 8], "t")
    assert taken == Taken(slot=1, keep=100, trim=False, copies=((5, 1),))
    # What stays behind is a prefix of what the new sequence will leave: the first to evict.
    assert table.order() == [5, 3]


def test_with_nothing_running_a_cache_is_reused_where_it_is() -> None:
    table = SlotTable(4)
    table.take(CHAT, "t")
    table.release(0, CHAT, "t")
    assert table.take([*CHAT, 1], "t") == Taken(slot=0, keep=100, trim=False)


def test_an_emptied_slot_is_taken_before_any_cache_is_evicted() -> None:
    table = SlotTable(3)
    for slot in (0, 1, 2):
        table.take([slot] * 40, "t")
    table.release(0, [10] * 40, "t")
    table.release(1, [11] * 40, "t")
    table.release_empty(2)  # a preempted sequence's slot, or one a failed step cleared
    assert table.order() == [2, 0, 1]
    assert table.take(list(range(5000, 5040)), "t") == Taken(slot=2, keep=0, trim=False)


def test_the_longest_cached_prefix_wins_over_the_lru_order() -> None:
    table = SlotTable(3)
    for slot in (0, 1, 2):
        table.take([slot] * 40, "t")
    table.release(1, CHAT[:40], "t")
    table.release(2, list(range(2000, 2100)), "t")
    table.release(0, CHAT[:70], "t")  # the most recently used, and the longest match
    assert table.order() == [1, 2, 0]
    taken = table.take([*CHAT, 8, 9], "t")
    assert taken == Taken(slot=0, keep=70, trim=False)
    assert (table.queries, table.hits) == (3 * 40 + 102, 70)  # every prompt is looked up
    # Its cache is longer than what the new prompt shares: it is cut.
    assert table.take([*CHAT[:50], 7, 7], "t") == Taken(slot=1, keep=40, trim=False)
    table.release(1, CHAT, "t")
    assert table.take([*CHAT[:60], 7], "t") == Taken(slot=1, keep=60, trim=True)


def test_a_whole_prompt_match_keeps_all_but_the_last_token() -> None:
    table = SlotTable(1)
    table.take(CHAT, "t")
    table.release(0, CHAT, "t")
    # Sampling needs the last prompt token's logits: that token is computed again.
    assert table.take(CHAT, "t") == Taken(slot=0, keep=99, trim=True)


def test_a_short_shared_prefix_does_not_evict_a_conversation() -> None:
    system = list(range(10, 10 + MIN_REUSE - 1))
    table = SlotTable(2)
    table.take(system + [1] * 50, "t")
    table.release(0, system + [1] * 50, "t")
    # Slot 1, never used, evicts nothing: a short shared prefix is not worth slot 0's cache.
    assert table.take(system + [2] * 50, "t") == Taken(slot=1, keep=0, trim=False)
    table.release(1, system + [2] * 50, "t")
    # All hold a cache now: the least recently used goes, keeping the prefix it shares.
    assert table.take(system + [3] * 50, "t") == Taken(slot=0, keep=len(system), trim=True)


def test_a_prefix_is_reused_by_its_owner_only() -> None:
    table = SlotTable(2)
    table.take(CHAT, "hospital")
    table.release(0, CHAT, "hospital")
    # Another tenant with the same document reuses nothing: it takes the other slot.
    other = table.take([*CHAT, 7], "law-firm")
    assert other == Taken(slot=1, keep=0, trim=False)
    assert table.hits == 0
    same = table.take([*CHAT, 7], "hospital")
    assert same == Taken(slot=0, keep=100, trim=False)


def test_another_owner_evicts_a_cache_it_cannot_read() -> None:
    table = SlotTable(1)
    table.take(CHAT, "hospital")
    table.release(0, CHAT, "hospital")
    assert table.take([*CHAT, 7], "law-firm") == Taken(slot=0, keep=0, trim=True)


def test_a_resumed_sequence_reuses_nothing_and_is_not_counted() -> None:
    table = SlotTable(1)
    table.take(CHAT, "t")
    table.release(0, CHAT, "t")
    assert table.take(CHAT, "t", reuse=False) == Taken(slot=0, keep=0, trim=True)
    assert (table.queries, table.hits) == (100, 0)  # only the first take was looked up


def test_switched_off_nothing_is_reused_or_counted() -> None:
    table = SlotTable(5, prefix_cache=False)
    for _ in range(5):
        table.take(CHAT, "t")
    table.release(4, CHAT, "t")
    table.release(1, CHAT, "t")
    # Slot 1 joins two runs; its cache is cut, not moved over slot 4's: nothing reuses it.
    assert table.take([*CHAT, 1], "t") == Taken(slot=1, keep=0, trim=True)
    assert table.order() == [4]
    assert (table.queries, table.hits) == (0, 0)


def test_a_slot_whose_copy_failed_holds_nothing() -> None:
    table = SlotTable(2)
    table.take(CHAT, "t")
    table.release(0, CHAT, "t")
    table.forget(0)
    assert table.take([*CHAT, 1], "t") == Taken(slot=0, keep=0, trim=False)
    table.forget(0)  # a taken slot: its sequence's step fails instead
    assert table.order() == [1]


def test_exact_reuse_keeps_only_prompt_positions_and_recomputes_two() -> None:
    table = SlotTable(1, exact=True)
    table.take(CHAT, "t")
    # The slot holds the 100-token prompt and 20 tokens of its answer, decoded one by one.
    answer = list(range(7000, 7020))
    table.release(0, CHAT + answer, "t", prefilled=100)
    next_turn = [*CHAT, *answer, 1, 2, 3]
    # Only the prompt's positions are reused: the answer is computed again as a prompt chunk.
    assert table.take(next_turn, "t") == Taken(slot=0, keep=100, trim=True)
    table.release(0, CHAT, "t", prefilled=100)
    # The same prompt again: its last two tokens are computed again, as one chunk.
    assert table.take(CHAT, "t") == Taken(slot=0, keep=98, trim=True)
    table.release(0, CHAT, "t", prefilled=100)
    # A prompt of one or two tokens reuses nothing.
    assert table.take(CHAT[:2], "t").keep == 0
