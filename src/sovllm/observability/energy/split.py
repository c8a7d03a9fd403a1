"""Pure arithmetic of energy attribution: a counter's delta, and a delta shared by tokens."""

from __future__ import annotations

from collections.abc import Mapping


def counter_delta(before: float, after: float, max_range: float | None) -> float:
    """What a counter advanced from `before` to `after`.

    A counter that wraps at `max_range` (RAPL's max_energy_range_uj) and reads lower than
    before has wrapped once: the delta runs to the top and on from zero. A counter without a
    range that goes back (a driver reloaded) advanced by an unknown amount: 0, never negative.
    """
    if after >= before:
        return after - before
    if max_range is None or max_range <= 0:
        return 0.0
    return (max_range - before) + after


def split_by_tokens(joules: float, tokens: Mapping[str, int]) -> dict[str, float]:
    """Share `joules` among requests in proportion to the tokens each processed.

    A request with no tokens gets nothing; when none has any, all share equally (they held
    the device, but nothing says how). The shares sum to `joules` (up to float rounding).
    """
    if not tokens:
        return {}
    total = sum(max(0, n) for n in tokens.values())
    if total == 0:
        each = joules / len(tokens)
        return {rid: each for rid in tokens}
    return {rid: joules * max(0, n) / total for rid, n in tokens.items()}


def co2e_grams(joules: float, kg_per_kwh: float) -> float:
    """Grams of CO2e for `joules` at a grid intensity of `kg_per_kwh` (1 kWh = 3.6e6 J)."""
    return joules / 3.6e6 * kg_per_kwh * 1000.0
