"""From request records to numbers. Every formula here is also in `FORMULAS` and the docs.

Latency statistics cover successful measured requests only (a failed request has no TTFT, and
a zero would drag the median down). Failures are never dropped silently: they are counted by
type, they count as misses in goodput and SLO attainment, and the SLO check treats them as
infinitely slow, so a server cannot meet an SLO by refusing work.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import RunResult
from sovllm.planner.slo import SLO, Constraint

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e", "queue_delay")

FORMULAS = {
    "ttft": "first_token - sent (first chunk whose delta carries content)",
    "tpot": "(e2e - ttft) / (output_tokens - 1), requests with ≥ 2 output tokens (vLLM TPOT)",
    "itl": "gaps between consecutive content chunks, pooled over requests (vLLM ITL)",
    "e2e": "last_token - sent",
    "queue_delay": "sent - scheduled (client-side wait: think-time overrun, concurrency cap)",
    "duration_s": "max(load stop, end of the last measured request) - end of warmup",
    "requests_per_s": "successful measured requests / duration_s",
    "output_tokens_per_s": "Σ usage.completion_tokens of successful requests / duration_s",
    "total_tokens_per_s": "Σ (prompt + completion tokens) of successful requests / duration_s",
    "peak_output_tokens_per_s": "max over 1-s buckets of output tokens, each chunk carrying "
    "completion_tokens / chunks",
    "mean_concurrency": "Σ (end - sent) / duration_s (Little's law)",
    "goodput_requests_per_s": "requests meeting every SLO term / duration_s",
    "slo_attainment": "requests meeting every SLO term / measured requests (failures miss)",
    "percentiles": "linear interpolation between closest ranks",
}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolating linearly between ranks."""
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    if ordered[lo] == ordered[hi]:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: Iterable[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return {"count": 0} | dict.fromkeys(("mean", "std", "min", "max", *PERCENTILES))
    mean = math.fsum(ordered) / n
    var = math.fsum((v - mean) ** 2 for v in ordered) / n if n > 1 else 0.0
    doc: dict[str, float | int | None] = {
        "count": n,
        "mean": mean,
        "std": math.sqrt(var) if math.isfinite(var) else math.inf,
        "min": ordered[0],
        "max": ordered[-1],
    }
    for name, q in PERCENTILES.items():
        doc[name] = percentile(ordered, q)
    return doc


# -- per request ----------------------------------------------------------------------------


def ttft(r: RequestRecord) -> float | None:
    if r.status != "ok" or r.first_token is None or r.sent is None:
        return None
    return r.first_token - r.sent


def e2e(r: RequestRecord) -> float | None:
    if r.status != "ok" or r.last_token is None or r.sent is None:
        return None
    return r.last_token - r.sent


def tpot(r: RequestRecord) -> float | None:
    first, total, n = ttft(r), e2e(r), r.output_tokens
    if first is None or total is None or n is None or n < 2:
        return None
    return (total - first) / (n - 1)


def itls(r: RequestRecord) -> list[float]:
    if r.status != "ok":
        return []
    times = r.chunk_times
    return [b - a for a, b in itertools.pairwise(times)]


def queue_delay(r: RequestRecord) -> float | None:
    return None if r.sent is None else r.sent - r.scheduled


def metric_values(r: RequestRecord, metric: str) -> list[float]:
    if metric == "itl":
        return itls(r)
    value = {"ttft": ttft, "tpot": tpot, "e2e": e2e, "queue_delay": queue_delay}[metric](r)
    return [] if value is None else [value]


def request_meets(r: RequestRecord, slo: SLO) -> bool:
    """Goodput: a request is good when it succeeded and meets every SLO term on its own.

    A per-request term compares the request's own value (for ITL: its own gaps at the term's
    statistic). TPOT does not apply to one-token answers.
    """
    if r.status != "ok":
        return False
    for c in slo.constraints:
        values = sorted(metric_values(r, c.metric))
        if not values:
            continue
        mine = _stat(values, c.stat) if c.metric == "itl" else values[0]
        if mine > c.limit_s:
            return False
    return True


def _stat(ordered: Sequence[float], stat: str) -> float:
    if stat == "mean":
        return math.fsum(ordered) / len(ordered)
    return percentile(ordered, PERCENTILES[stat])


def constraint_value(records: Sequence[RequestRecord], c: Constraint) -> float | None:
    """The run's value of one SLO term; failed requests enter as +inf."""
    values: list[float] = []
    for r in records:
        if r.status == "ok":
            values.extend(metric_values(r, c.metric))
        else:
            values.append(math.inf)
    if not values:
        return None
    values.sort()
    return _stat(values, c.stat)


# -- the run --------------------------------------------------------------------------------


def measured(result: RunResult) -> list[RequestRecord]:
    """The records that count: not warmup, and not cut off by the user's Ctrl-C."""
    return [
        r
        for r in result.records
        if not r.warmup and not (result.interrupted and r.error_type == "cancelled")
    ]


def window(result: RunResult, records: Sequence[RequestRecord]) -> tuple[float, float]:
    """From the end of warmup to when the load stopped or the last measured request ended,
    whichever is later: idle think time at the end is still time under test."""
    end = max((r.end for r in records if r.end is not None), default=result.stopped_at)
    return result.warmup_end, max(end, result.stopped_at, result.warmup_end + 1e-9)


def summarise(result: RunResult, slo: SLO) -> dict[str, Any]:
    records = measured(result)
    ok = [r for r in records if r.status == "ok"]
    start, end = window(result, records)
    duration = end - start
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    busy = math.fsum((r.end or end) - r.sent for r in records if r.sent is not None)
    good = [r for r in records if request_meets(r, slo)]
    buckets = timeline(ok, start, end, 1.0)

    latency = {m: stats(v for r in ok for v in metric_values(r, m)) for m in LATENCY_METRICS}
    latency["queue_delay"] = stats(v for r in records for v in metric_values(r, "queue_delay"))
    terms = []
    for c in slo.constraints:
        value = constraint_value(records, c)
        terms.append(
            {
                "metric": c.metric,
                "stat": c.stat,
                "limit_s": c.limit_s,
                "value_s": value,
                "met": value is not None and value <= c.limit_s,
            }
        )
    return {
        "load": result.load.as_json(),
        "stop_reason": result.reason,
        "window": {"start_s": start - result.t0, "end_s": end - result.t0, "duration_s": duration},
        "requests": {
            "measured": len(records),
            "ok": len(ok),
            "error": sum(r.status == "error" for r in records),
            "incomplete": sum(r.status == "incomplete" for r in records),
            "warmup": sum(r.warmup for r in result.records),
        },
        "tokens": tokens_summary(ok),
        "throughput": {
            "requests_per_s": len(ok) / duration,
            "output_tokens_per_s": out_tokens / duration,
            "total_tokens_per_s": (in_tokens + out_tokens) / duration,
            "peak_output_tokens_per_s": max((b["output_tokens"] for b in buckets), default=0.0),
            "mean_concurrency": busy / duration,
        },
        "latency_s": latency,
        "slo": {
            "terms": terms,
            "met": all(t["met"] for t in terms) if terms else None,
            "good_requests": len(good),
            "attainment": len(good) / len(records) if records else None,
            "goodput_requests_per_s": len(good) / duration,
        },
        "errors": dict(Counter(r.error_type or "unknown" for r in records if r.status != "ok")),
        "timeline": timeline_series(result, records, start, end),
    }


def tokens_summary(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    prompt_checked = [
        (r.prompt_tokens, r.prompt_tokens_target)
        for r in ok
        if r.prompt_tokens is not None and r.prompt_tokens_target is not None
    ]
    output_checked = [(r.output_tokens, r.output_tokens_target) for r in ok if r.output_tokens]
    # The prefix cache's share of the prompts, where the server reports it (sovllm; vLLM only
    # with --enable-prompt-tokens-details, which sovllm's vLLM replicas are started with).
    reported = [r for r in ok if r.cached_tokens is not None and r.prompt_tokens]
    prompt_total = sum(r.prompt_tokens or 0 for r in reported)
    cached_total = sum(min(r.cached_tokens or 0, r.prompt_tokens or 0) for r in reported)
    cached = cached_total / prompt_total if prompt_total else None
    return {
        "prompt": stats(float(r.prompt_tokens) for r in ok if r.prompt_tokens is not None),
        "cached_prompt_fraction": cached,
        "output": stats(float(r.output_tokens) for r in ok if r.output_tokens is not None),
        "count_source": dict(Counter(r.token_source or "none" for r in ok)),
        "prompt_target_check": _check(prompt_checked),
        "output_target_check": _check(output_checked),
    }


def _check(pairs: Sequence[tuple[int | None, int]]) -> dict[str, Any]:
    errors = [abs((a or 0) - b) for a, b in pairs]
    return {
        "checked": len(pairs),
        "exact": sum(e == 0 for e in errors),
        "max_abs_error": max(errors, default=0),
        "mean_abs_error": math.fsum(errors) / len(errors) if errors else 0.0,
    }


def timeline(
    ok: Sequence[RequestRecord], start: float, end: float, bucket_s: float
) -> list[dict[str, float]]:
    """Output tokens/s and completed requests/s per bucket of the measured window."""
    n = max(1, math.ceil((end - start) / bucket_s))
    tokens = [0.0] * n
    done = [0.0] * n
    for r in ok:
        chunks = r.chunk_times
        if chunks and r.output_tokens:
            per_chunk = r.output_tokens / len(chunks)
            for t in chunks:
                i = int((t - start) // bucket_s)
                if 0 <= i < n:
                    tokens[i] += per_chunk
        if r.end is not None:
            i = int((r.end - start) // bucket_s)
            if 0 <= i < n:
                done[i] += 1
    return [
        {"t_s": i * bucket_s, "output_tokens": tokens[i] / bucket_s, "requests": done[i] / bucket_s}
        for i in range(n)
    ]


def timeline_series(
    result: RunResult, records: Sequence[RequestRecord], start: float, end: float
) -> dict[str, Any]:
    """Throughput and requests in flight over time, at most ~200 points (for the plots)."""
    bucket = max(1.0, math.ceil((end - start) / 200))
    ok = [r for r in records if r.status == "ok"]
    rows = timeline(ok, start, end, bucket)
    for row in rows:
        mid = start + row["t_s"] + bucket / 2
        row["in_flight"] = float(
            sum(
                1
                for r in result.records
                if r.sent is not None and r.sent <= mid and (r.end is None or r.end > mid)
            )
        )
    return {"bucket_s": bucket, "points": rows}


def live(records: Sequence[RequestRecord], now: float, span_s: float = 5.0) -> dict[str, float]:
    """What the live display shows: TTFT p95 so far and output tokens/s over the last span."""
    firsts = sorted(v for r in records if not r.warmup and (v := ttft(r)) is not None)
    recent = 0.0
    for r in records:
        if r.chunk_times and r.chunk_times[-1] >= now - span_s:
            per = (r.output_tokens or len(r.chunk_times)) / len(r.chunk_times)
            recent += per * sum(1 for t in r.chunk_times if t >= now - span_s)
    return {
        "ttft_p95": percentile(firsts, 95) if firsts else math.nan,
        "output_tokens_per_s": recent / span_s,
        "ok": float(sum(r.status == "ok" for r in records if not r.warmup)),
        "errors": float(sum(r.status == "error" for r in records if not r.warmup)),
    }
