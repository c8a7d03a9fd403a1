"""Joules per output token, where the server reports energy: `sovllm:energy_joules_total` on
its /metrics read before and after a run (docs/observability.md, "Energy"). Beside it, the
planner's figure for the same hardware: its serving power (TDP x the cost model's load power
fraction, per device) over the predicted output tokens per second."""

from __future__ import annotations

from typing import Any

import httpx

from sovllm.bench.client import _headers, _root
from sovllm.bench.record import RequestRecord

METRIC = "sovllm:energy_joules_total{"


def parse(text: str) -> dict[str, float]:
    """Joules by source (`measured:rapl`, `estimated`...) summed over tenants and models."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(METRIC):
            continue
        labels, value = line.rsplit(" ", 1)
        source = labels.split('source="', 1)[1].split('"', 1)[0] if 'source="' in labels else ""
        out[source] = out.get(source, 0.0) + float(value)
    return out


async def scrape(base_url: str, api_key: str | None) -> dict[str, float] | None:
    """The server's energy counters; None when it has no /metrics or reports no energy."""
    try:
        async with httpx.AsyncClient(headers=_headers(api_key), timeout=5.0) as http:
            r = await http.get(f"{_root(base_url)}/metrics")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    found = parse(r.text)
    return found or None


def summarise(
    before: dict[str, float] | None, after: dict[str, float] | None, records: list[RequestRecord]
) -> dict[str, Any] | None:
    """The run's joules (every request ended between the two reads, warmup included, so every
    output token of the run counts) and joules per output token."""
    if after is None:
        return None
    before = before or {}
    delta = {s: j - before.get(s, 0.0) for s, j in after.items() if j - before.get(s, 0.0) > 0}
    tokens = sum(r.output_tokens or 0 for r in records)
    joules = sum(delta.values())
    return {
        "joules": joules,
        "output_tokens": tokens,
        "joules_per_output_token": joules / tokens if tokens else None,
        "sources": sorted(delta),
    }


def predicted_per_token(
    tdp_w: float, devices: int, output_tokens_per_s: float | None
) -> float | None:
    """The planner's joules per output token: its serving power over its token rate."""
    from sovllm.planner.cost import CostParams

    if not output_tokens_per_s:
        return None
    return tdp_w * CostParams().load_power_fraction * devices / output_tokens_per_s
