"""This service's own traffic, read back for `sovllm plan size --from-usage`.

Each answered request leaves a `request.end` audit entry with its token counts and timings
(governance/audit/records.py), and a `request.begin` entry naming who sent it (a key and a
user pseudonym). Past `retention.audit_days` the bodies are pruned (NULL): those requests are
counted, not read. The usage tables (governance/usage.py) keep daily totals longer; they are
reported beside the entries, so a reader sees how much of the period the entries cover.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from sovllm.governance.usage import usage
from sovllm.planner.errors import PlannerError
from sovllm.planner.workload import Lengths, Load
from sovllm.store.db import Database
from sovllm.store.schema import AuditEntry

HOUR_S = 3600.0


@dataclass(frozen=True)
class Recorded:
    """One answered request as its audit entries recorded it."""

    arrival: float  # POSIX seconds: the end entry's time less the request's total time
    prompt_tokens: int
    output_tokens: int
    e2e_s: float | None  # arrival to last token, when the engine's timings were recorded
    user: str | None  # pseudonym, else "key:<id>"; None when the begin entry is gone


@dataclass(frozen=True)
class Traffic:
    since: dt.date | None
    requests: tuple[Recorded, ...]  # by arrival
    pruned: int  # request.end entries in the period whose bodies were pruned (skipped)
    without_tokens: int  # request.end entries with no token counts (failed before the engine)
    usage_requests: int  # the usage tables' totals for the same period
    usage_prompt_tokens: int
    usage_completion_tokens: int
    peak_start: float  # the busiest 60 minutes start at this arrival
    peak_first: int  # ... which is requests[peak_first]
    peak_requests: int
    peak_users: int
    peak_e2e_mean_s: float

    @property
    def first(self) -> float:
        return self.requests[0].arrival

    @property
    def last(self) -> float:
        return self.requests[-1].arrival

    @property
    def peak_rate_per_s(self) -> float:
        return self.peak_requests / HOUR_S

    @property
    def peak(self) -> tuple[Recorded, ...]:
        return self.requests[self.peak_first : self.peak_first + self.peak_requests]

    def replay(self, growth: float) -> tuple[Load, Lengths, Lengths]:
        """The peak hour's requests exactly as recorded: arrivals from its first (closer together
        by the growth factor) and each request's own prompt and output lengths."""
        peak = self.peak
        arrivals = tuple((r.arrival - peak[0].arrival) / growth for r in peak)
        load = Load("trace", float(len(peak)), arrivals=arrivals)
        prompts = Lengths.from_values([r.prompt_tokens for r in peak])
        return load, prompts, Lengths.from_values([r.output_tokens for r in peak])

    @property
    def think_time_s(self) -> float:
        """What each user waits between an answer and the next question, so that the peak
        hour's users send its requests: a closed loop sends U / (E2E + think) requests a second."""
        return max(0.0, self.peak_users / self.peak_rate_per_s - self.peak_e2e_mean_s)


def parse_growth(text: str) -> float:
    """'3x', '3' or '1.5x': the traffic to size for, as a multiple of the recorded peak."""
    raw = text.strip().lower().removesuffix("x")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a factor such as 3x or 1.5, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the growth factor must be above 0, got '{text}'")
    return value


def parse_since(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD, got '{text}'") from None


def _tokens(body: dict[str, Any]) -> tuple[int, int] | None:
    tokens = body.get("tokens")
    if not isinstance(tokens, dict):
        return None
    prompt, completion = tokens.get("prompt"), tokens.get("completion")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


def _identity(body: dict[str, Any]) -> str | None:
    principal = body.get("principal")
    if not isinstance(principal, dict):
        return None
    if principal.get("user"):
        return str(principal["user"])
    return f"key:{principal['key_id']}" if principal.get("key_id") else None


def _peak(requests: list[Recorded]) -> tuple[int, int]:
    """(index of the first request, request count) of the busiest 60-minute window, windows
    starting at an arrival."""
    best, best_start, j = 0, 0, 0
    for i, r in enumerate(requests):
        while j < len(requests) and requests[j].arrival < r.arrival + HOUR_S:
            j += 1
        if j - i > best:
            best, best_start = j - i, i
    return best_start, best


def read_traffic(db: Database, since: dt.date | None = None) -> Traffic:
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC).timestamp() if since else None
    kinds = ("request.begin", "request.end")
    q = select(AuditEntry.kind, AuditEntry.request_id, AuditEntry.body, AuditEntry.at).where(
        AuditEntry.kind.in_(kinds)
    )
    pruned_q = select(func.count()).where(
        AuditEntry.kind == "request.end", AuditEntry.body.is_(None)
    )
    if start is not None:
        q = q.where(AuditEntry.at >= start)
        pruned_q = pruned_q.where(AuditEntry.at >= start)
    with db.transaction() as s:
        rows = s.execute(q.order_by(AuditEntry.seq)).all()
        pruned = int(s.execute(pruned_q).scalar_one())
    users: dict[str, str | None] = {}
    ends: list[tuple[float, str | None, dict[str, Any]]] = []
    for kind, request_id, body, at in rows:
        if body is None:
            continue  # pruned past retention: counted above, never read
        doc = json.loads(body)
        if kind == "request.begin" and request_id:
            users[request_id] = _identity(doc)
        elif kind == "request.end":
            ends.append((float(at), request_id, doc))
    recorded: list[Recorded] = []
    without_tokens = 0
    for at, request_id, doc in ends:
        tokens = _tokens(doc)
        if tokens is None:
            without_tokens += 1
            continue
        total = (doc.get("timings") or {}).get("total_s")
        e2e = float(total) if isinstance(total, int | float) else None
        arrival = at - (e2e or 0.0)
        who = users.get(request_id) if request_id else None
        recorded.append(Recorded(arrival, tokens[0], tokens[1], e2e, who))
    if not recorded:
        period = f"since {since}" if since else "in the audit log"
        raise PlannerError(
            f"no request.end entries with token counts {period} ({pruned} pruned past "
            "retention, skipped); nothing to size from"
        )
    recorded.sort(key=lambda r: r.arrival)
    first, count = _peak(recorded)
    window = recorded[first : first + count]
    identities = {r.user for r in window if r.user is not None}
    latencies = [r.e2e_s for r in window if r.e2e_s is not None]
    days = usage(db, since=since)
    return Traffic(
        since=since,
        requests=tuple(recorded),
        pruned=pruned,
        without_tokens=without_tokens,
        usage_requests=sum(d.requests for d in days),
        usage_prompt_tokens=sum(d.prompt_tokens for d in days),
        usage_completion_tokens=sum(d.completion_tokens for d in days),
        peak_start=window[0].arrival,
        peak_first=first,
        peak_requests=count,
        peak_users=max(1, len(identities)),
        peak_e2e_mean_s=statistics.fmean(latencies) if latencies else 0.0,
    )


def fit_lengths(values: list[int]) -> Lengths:
    """A lognormal with the recorded median and 95th percentile (the form `--input-tokens`
    takes); fixed lengths when the record has no spread."""
    xs = sorted(values)
    median = max(1.0, float(statistics.median(xs)))
    p95 = float(xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)])
    if p95 > median:
        return Lengths.lognormal(f"lognormal:{median},{p95}")
    n = max(1, round(median))
    return Lengths(n, n)


def traffic_json(t: Traffic, growth: float, users: int, replay: bool) -> dict[str, Any]:
    def iso(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")

    return {
        "since": t.since.isoformat() if t.since else None,
        "first_arrival": iso(t.first),
        "last_arrival": iso(t.last),
        "requests": len(t.requests),
        "skipped_pruned": t.pruned,
        "skipped_without_tokens": t.without_tokens,
        "usage_tables": {
            "requests": t.usage_requests,
            "prompt_tokens": t.usage_prompt_tokens,
            "completion_tokens": t.usage_completion_tokens,
        },
        "peak": {
            "start": iso(t.peak_start),
            "requests_per_hour": t.peak_requests,
            "users": t.peak_users,
            "e2e_mean_s": round(t.peak_e2e_mean_s, 4),
            "think_time_s": round(t.think_time_s, 3),
        },
        "growth": growth,
        "sized_for_users": users,
        "sized_for_requests_per_hour": round(t.peak_requests * growth, 1),
        "prompt_tokens": str(fit_lengths([r.prompt_tokens for r in t.requests])),
        "output_tokens": str(fit_lengths([r.output_tokens for r in t.requests])),
        "replay": replay,
    }
