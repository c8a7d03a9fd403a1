"""The soak's verdict: the outcome of every request, usage against the audit log, and the targets.

Targets (docs/bench.md, "Soak"):
- no 5xx: from the chat users, the key cycles or the admin calls. A 503 `service_stopped` to a
  request that met one of the soak's own stops is the stop working, and is counted as such;
- memory flat after warm-up: resident memory grows at most `max_rss_growth` over the last two
  thirds of the measured duration (the last 20 minutes of a 30-minute run), from the median of
  the window's first three samples to the median of its last three;
- the audit log verifies at the end;
- the tenant's usage (prompt + completion tokens) equals the sum of the token counts in the
  `request.end` entries of the requests its keys began.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import RunResult

if TYPE_CHECKING:
    from sovllm.bench.soak import SoakRun, StopWindow

# A request within this long after a resume may still have been refused by the stop: the
# gateway applies a resume made elsewhere within a fraction of a second (governance/oversight).
AFTER_RESUME_S = 2.0
PAGE = 1000


def met_stop(r: RequestRecord, stops: list[StopWindow]) -> bool:
    start = r.sent if r.sent is not None else r.scheduled
    return overlaps(start, r.end if r.end is not None else start, stops)


def overlaps(start: float, end: float, stops: list[StopWindow]) -> bool:
    """Whether [start, end] (perf_counter) meets a stop, up to AFTER_RESUME_S past its end."""
    for w in stops:
        w_end = (w.end if w.end is not None else float("inf")) + AFTER_RESUME_S
        if start <= w_end and end >= w.start:
            return True
    return False


def outcome(r: RequestRecord, stops: list[StopWindow]) -> str:
    if r.status == "ok":
        return "ok"
    if r.error_type == "cancelled":
        return "cancelled at the end of the run"
    if r.error_type == "timeout":
        # A stop ends a request or refuses it; it never leaves one waiting for the client.
        return "error: timeout"
    during = met_stop(r, stops)
    if r.http_status is not None and r.http_status >= 500:
        if r.http_status == 503 and during and "stopped" in (r.error or ""):
            return "refused by a stop (503 service_stopped)"
        return f"5xx: HTTP {r.http_status}"
    if during:
        return f"cut by a stop ({r.error_type})"
    return f"error: {r.error_type}"


async def reconcile(soak: SoakRun, tenant: str) -> dict[str, Any]:
    """Usage of `tenant` (GET /admin/v1/usage) against its requests' `request.end` entries
    (GET /admin/v1/audit/entries since the tenant was made, newest first, page by page)."""
    r = await soak.call("GET", f"/admin/v1/usage?tenant={tenant}")
    if r is None or r.status_code != 200:
        return {"matches": False, "error": "usage could not be read"}
    rows = r.json()["data"]
    usage_tokens = sum(int(u["prompt_tokens"]) + int(u["completion_tokens"]) for u in rows)
    usage_requests = sum(int(u["requests"]) for u in rows)
    begun: set[str] = set()
    ends: dict[str, int] = {}
    seen: set[int] = set()
    # From the tenant's creation, on the server's clock: the prompt calibration before the run
    # already sends requests under it.
    created = dt.datetime.fromtimestamp(soak.plan.tenant_created_at - 1.0, dt.UTC)
    since = created.isoformat()
    until: str | None = None
    while True:
        params = {"since": since, "limit": str(PAGE)} | ({"until": until} if until else {})
        page = await soak.call("GET", "/admin/v1/audit/entries", params=params)
        if page is None or page.status_code != 200:
            return {"matches": False, "error": "the audit log could not be read"}
        data = page.json()["data"]
        fresh = [row for row in data if int(row["seq"]) not in seen]
        if not fresh:
            break
        for row in fresh:
            seen.add(int(row["seq"]))
            entry = row["entry"]
            rid = entry.get("request_id")
            if entry.get("kind") == "request.begin":
                if (entry.get("principal") or {}).get("tenant") == tenant and rid:
                    begun.add(rid)
            elif entry.get("kind") == "request.end" and rid:
                tokens = entry.get("tokens") or {}
                ends[rid] = int(tokens.get("prompt") or 0) + int(tokens.get("completion") or 0)
        # Entries of one instant may straddle pages: the next page repeats that instant (`at`
        # below the bound) and the seen set drops the repeats.
        oldest = min(str(row["entry"].get("time")) for row in fresh)
        until = (dt.datetime.fromisoformat(oldest) + dt.timedelta(milliseconds=1)).isoformat()
        if len(data) < PAGE:
            break
    log_tokens = sum(t for rid, t in ends.items() if rid in begun)
    return {
        "usage_tokens": usage_tokens,
        "usage_requests": usage_requests,
        "log_tokens": log_tokens,
        "begun": len(begun),
        "ended": sum(1 for rid in begun if rid in ends),
        "matches": usage_tokens == log_tokens and all(rid in ends for rid in begun),
    }


def rss_growth(samples: list[tuple[float, float]], window_start: float) -> dict[str, Any]:
    inside = [v for t, v in samples if t >= window_start]
    if len(inside) < 4:
        return {"growth": None, "why": f"{len(inside)} samples in the window; 4 are needed"}
    first = statistics.median(inside[:3])
    last = statistics.median(inside[-3:])
    return {"growth": last / first - 1.0, "from_bytes": first, "to_bytes": last}


def _series(soak: SoakRun, name: str) -> list[tuple[float, float]]:
    return [(s.t_s, s.values[name]) for s in soak.state.samples if name in s.values]


def _ends(points: list[tuple[float, float]]) -> dict[str, float | None]:
    return {
        "start": points[0][1] if points else None,
        "end": points[-1][1] if points else None,
        "max": max(v for _, v in points) if points else None,
    }


def judge(
    soak: SoakRun, result: RunResult, verify: dict[str, Any], usage: dict[str, Any]
) -> dict[str, Any]:
    st = soak.state
    outcomes = Counter(outcome(r, st.stops) for r in result.records)
    chat_5xx = sum(n for k, n in outcomes.items() if k.startswith("5xx"))
    # A key cycle's request refused by a stop in force is marked expected (soak.py).
    calls_5xx = [c for c in st.calls if c.status is not None and c.status >= 500 and not c.ok]
    failed_calls = [c for c in st.calls if not c.ok]
    measured = result.stop_at - result.warmup_end
    window_start = (result.warmup_end - result.t0) + measured / 3.0
    rss = _series(soak, "rss_bytes")
    growth = rss_growth(rss, window_start)
    limit = soak.plan.max_rss_growth
    targets = [
        {
            "name": "no 5xx",
            "met": chat_5xx == 0 and not calls_5xx,
            "value": f"{chat_5xx} from the chat users, {len(calls_5xx)} from the admin actor",
        },
        {
            "name": f"memory flat after warm-up (RSS growth ≤ {limit:.0%})",
            "met": growth["growth"] is not None and growth["growth"] <= limit,
            "value": growth.get("why")
            or f"{growth['growth']:+.1%} from t={window_start:.0f} s to the end",
        },
        {
            "name": "audit log verifies",
            "met": verify.get("ok") is True,
            "value": str(verify.get("summary")),
        },
        {
            "name": "usage equals the request.end token counts",
            "met": usage.get("matches") is True,
            "value": usage.get("error")
            or f"usage {usage['usage_tokens']} tokens, log {usage['log_tokens']} tokens "
            f"({usage['ended']}/{usage['begun']} begun requests ended)",
        },
    ]
    series = {
        name: [[t, v] for t, v in _series(soak, name)]
        for name in ("rss_bytes", "open_fds", "db_bytes", "wal_bytes", "audit_entries")
    }
    return {
        "tenant": soak.plan.tenant,
        "plan": {
            k: getattr(soak.plan, k)
            for k in ("sample_every_s", "admin_every_s", "key_every_s", "stop_every_s")
        }
        | {"stop_hold_s": soak.plan.stop_hold_s, "max_rss_growth": limit},
        "memory_window_start_s": window_start,
        "rss_growth": growth,
        "requests": len(result.records),
        "outcomes": dict(outcomes.most_common()),
        "admin_calls": len(st.calls),
        "admin_failures": [
            {"t_s": round(c.t_s, 1), "call": c.what, "status": c.status, "note": c.note}
            for c in failed_calls[:50]
        ],
        "admin_failures_count": len(failed_calls),
        "key_cycles": st.key_cycles,
        "stops": [
            {
                "scope": w.scope,
                "mode": w.mode,
                "start_s": round(soak.rel(w.start), 2),
                "end_s": round(soak.rel(w.end), 2) if w.end is not None else None,
            }
            for w in st.stops
        ],
        "verify": verify,
        "usage": usage,
        "figures": {name: _ends([(t, v) for t, v in pts]) for name, pts in series.items()},
        "series": series,
        "targets": targets,
        "met": all(t["met"] for t in targets),
    }
