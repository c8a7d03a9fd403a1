"""Quotas that hold across gateway processes: decided inside one database transaction.

Per key and per tenant: requests per minute and tokens per minute (sliding 60-second windows,
counted in per-second buckets of admitted requests; see WINDOW_S), concurrent requests, and a
monthly token budget. Admission reserves
prompt + max_tokens; settlement replaces the reservation with what was used.

The check and the insert that follows it run under one lock, so concurrent admissions from any
number of processes see each other: SQLite's BEGIN IMMEDIATE (the file's write lock) or
PostgreSQL's row locks on the key and its tenant (always taken in that order).

One job, one file (about 400 lines; OpenAI's rate-limit headers are in rate_limit_headers.py): admission, settlement and release share the
window arithmetic, the SQL and the lock order, and a deadlock comes from their disagreeing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sovllm.governance.identity import (
    PRINCIPAL_SQL,
    Limits,
    Principal,
    Role,
    hash_key,
    principal_from_row,
    principal_shape,
)
from sovllm.governance.rate_limit_headers import RateLimitHeaders as RateLimitHeaders
from sovllm.observability.energy.meter import Energy
from sovllm.store.db import Database
from sovllm.store.raw import SQL, RawTransaction, raw_transaction

# The request path's statements, run on plain driver connections (see store/raw.py).
_SCOPES = ("key_id", "tenant_id")
# RPM and TPM count per-second buckets, one row per scope and second: a window reads at most 61
# rows whatever the rate. (One row per request cost 0.2-0.3 ms per 1,000 requests in the window,
# 1.5-2 ms per admission for a key at 100 requests/s; docs/performance.md.)
_WINDOW = SQL(
    "SELECT coalesce(sum(requests), 0), coalesce(sum(tokens), 0), "
    "min(CASE WHEN requests > 0 THEN second END) FROM rate_buckets "
    "WHERE scope = :scope AND second > :since"
)
_INFLIGHT = {
    c: SQL(
        f"SELECT count(*), coalesce(sum(reserved_tokens), 0) FROM inflight "
        f"WHERE {c} = :id AND lease_until > :now"
    )
    for c in _SCOPES
}
_MONTH = {
    c: SQL(
        f"SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_daily "
        f"WHERE {c} = :id AND day >= :month"
    )
    for c in _SCOPES
}
# One statement for both scopes (every statement is a round trip to PostgreSQL). The same upsert
# syntax on SQLite (3.24+) and PostgreSQL.
_COUNT_REQUEST = SQL(
    "INSERT INTO rate_buckets (scope, second, requests, tokens) VALUES "
    "(:kscope, :second, 1, :tokens), (:tscope, :second, 1, :tokens) "
    "ON CONFLICT (scope, second) DO UPDATE SET "
    "requests = rate_buckets.requests + 1, tokens = rate_buckets.tokens + excluded.tokens"
)
# Settlement and release correct the buckets of the admission's second. On PostgreSQL they must
# lock the two rows in the order admission's upsert does, "k:" before "t:", or the two can
# deadlock: a plain UPDATE locks rows in whatever order its plan reads them (a sequential or
# bitmap scan: their order on disk), so the rows are locked in a sorted SELECT first. SQLite
# runs one writer at a time.
_ADJUST_BUCKETS = SQL(
    "UPDATE rate_buckets SET requests = requests + :requests, tokens = tokens + :tokens "
    "WHERE scope IN (:kscope, :tscope) AND second = :second",
    postgresql="WITH locked AS (SELECT scope FROM rate_buckets WHERE scope IN (:kscope, :tscope) "
    "AND second = :second ORDER BY scope FOR UPDATE) UPDATE rate_buckets b SET "
    "requests = b.requests + :requests, tokens = b.tokens + :tokens FROM locked "
    "WHERE b.scope = locked.scope AND b.second = :second",
)
_INSERT_INFLIGHT = SQL(
    "INSERT INTO inflight (request_id, key_id, tenant_id, started_at, lease_until, "
    "reserved_tokens, owner) VALUES (:rid, :key, :tenant, :now, :lease, :tokens, :owner)"
)
_FORGET = (
    # One scope at a time, key first, for the same lock order as settlement.
    SQL("DELETE FROM rate_buckets WHERE scope = :kscope AND second <= :since"),
    SQL("DELETE FROM rate_buckets WHERE scope = :tscope AND second <= :since"),
    SQL("DELETE FROM inflight WHERE key_id = :key AND lease_until <= :now"),
)
# Ending the in-flight row first makes settlement and release count once: a second call finds no
# row and leaves the buckets alone (as does a call after the lease expired and the row was
# forgotten, when the buckets are long out of the window).
_END_INFLIGHT = SQL("DELETE FROM inflight WHERE request_id = :rid")
_COUNT_USAGE = SQL(
    "INSERT INTO usage_daily (day, key_id, tenant_id, requests, prompt_tokens, "
    "completion_tokens, energy_joules, energy_co2e_g, energy_source) "
    "VALUES (:day, :key, :tenant, 1, :prompt, :completion, :joules, :co2e, :source) "
    "ON CONFLICT (day, key_id) DO UPDATE SET requests = usage_daily.requests + 1, "
    "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, "
    "energy_joules = usage_daily.energy_joules + excluded.energy_joules, "
    "energy_co2e_g = usage_daily.energy_co2e_g + excluded.energy_co2e_g, "
    # A day's requests read from one source keep its name; from several, `mixed`.
    "energy_source = CASE WHEN excluded.energy_source IN ('', usage_daily.energy_source) "
    "THEN usage_daily.energy_source WHEN usage_daily.energy_source = '' "
    "THEN excluded.energy_source ELSE 'mixed' END"
)
_PRINCIPAL = SQL(PRINCIPAL_SQL)
_PRINCIPAL_LOCKED = SQL(PRINCIPAL_SQL + " FOR UPDATE")
_LOCK_KEY_AND_TENANT = SQL(
    "SELECT k.id, t.id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
    "WHERE k.id = :key FOR UPDATE"
)
WINDOW_S = 60
"""The RPM/TPM window. Counted in whole-second buckets, it is the current second and the 60
before it: a request counts for between 60 and 61 s, so no 60-second span ever admits more than
the limit (a refused client may wait up to a second longer than an exact window would make it)."""
LEASE_S = 900.0
"""An in-flight row is ignored after this long: the last resort for a row whose owner is not
known to be dead (governance/instances.py releases those of dead gateways sooner)."""
INSTANCE_ID = secrets.token_hex(16)
"""This process's id as the owner of its in-flight rows (a `gateway_instances` row)."""


class QuotaExceeded(Exception):
    def __init__(
        self, message: str, code: str, retry_after_s: float, headers: RateLimitHeaders
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.headers = headers
        self.principal: Principal | None = None


@dataclass(frozen=True)
class Ticket:
    request_id: str
    key_id: str
    tenant_id: int
    reserved_tokens: int
    headers: RateLimitHeaders
    second: int  # the rate buckets' second of the admission, which settlement corrects

    @property
    def scopes(self) -> tuple[str, str]:
        return _scope_keys(self.key_id, self.tenant_id)


def _scope_keys(key_id: str, tenant_id: int) -> tuple[str, str]:
    return f"k:{key_id}", f"t:{tenant_id}"


def _month_start(now: float) -> dt.date:
    d = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return d.replace(day=1)


def _seconds_to_next_month(now: float) -> float:
    start = _month_start(now)
    nxt = (start + dt.timedelta(days=32)).replace(day=1)
    return dt.datetime(nxt.year, nxt.month, 1, tzinfo=dt.UTC).timestamp() - now


def _window_floor(now: float) -> int:
    """Buckets after this second are in the window."""
    return math.floor(now) - WINDOW_S - 1


@dataclass(frozen=True)
class _Scope:
    """A key or a tenant, as its limits are checked."""

    name: str  # as refusals name it: "this API key", "tenant acme"
    column: str  # its column in the in-flight and usage tables: key_id or tenant_id
    ident: object
    bucket: str  # its rate buckets' scope (_scope_keys)
    limits: Limits


def _check_scope(s: RawTransaction, it: _Scope, reserved: int, now: float) -> RateLimitHeaders:
    scope, column, limits = it.name, it.column, it.limits
    headers = refused = RateLimitHeaders()
    params = {"id": it.ident, "now": now}
    if limits.rpm is not None or limits.tpm is not None:
        since = _window_floor(now)
        window = {"scope": it.bucket, "since": since}
        count, tokens, oldest = s.one(_WINDOW, window) or (0, 0, None)
        count, tokens = int(count), int(tokens)
        # The oldest second leaves the window once `since` reaches it.
        reset = (oldest + WINDOW_S + 1 - now) if oldest is not None else 0.0
        headers = RateLimitHeaders(
            limit_requests=limits.rpm,
            remaining_requests=None if limits.rpm is None else limits.rpm - count - 1,
            reset_requests_s=reset,
            limit_tokens=limits.tpm,
            remaining_tokens=None if limits.tpm is None else limits.tpm - tokens - reserved,
            reset_tokens_s=reset,
        )
        # A refusal counts nothing: its headers say what is left without this request.
        refused = dataclasses.replace(
            headers,
            remaining_requests=None if limits.rpm is None else limits.rpm - count,
            remaining_tokens=None if limits.tpm is None else limits.tpm - tokens,
        )
        if limits.rpm is not None and count >= limits.rpm:
            raise QuotaExceeded(
                f"Rate limit reached for {scope}: {limits.rpm} requests per minute. "
                f"Retry in {math.ceil(reset)} s.",
                "rate_limit_exceeded",
                reset,
                refused,
            )
        if limits.tpm is not None and reserved > limits.tpm:
            raise QuotaExceeded(
                f"Request too large for {scope}: it needs up to {reserved} tokens (prompt + "
                f"max_tokens) and the limit is {limits.tpm} tokens per minute. Lower max_tokens.",
                "request_too_large",
                WINDOW_S,
                refused,
            )
        if limits.tpm is not None and tokens + reserved > limits.tpm:
            raise QuotaExceeded(
                f"Rate limit reached for {scope}: {limits.tpm} tokens per minute; "
                f"{tokens} used or reserved, this request needs up to {reserved}. "
                f"Retry in {math.ceil(reset)} s.",
                "rate_limit_exceeded",
                reset,
                refused,
            )
    held = 0
    if limits.max_concurrent is not None or limits.monthly_tokens is not None:
        running, held = s.one(_INFLIGHT[column], params) or (0, 0)
        if limits.max_concurrent is not None and running >= limits.max_concurrent:
            raise QuotaExceeded(
                f"Too many concurrent requests for {scope}: the limit is "
                f"{limits.max_concurrent}. Retry when one finishes.",
                "concurrency_limit_exceeded",
                1.0,
                refused,
            )
    if limits.monthly_tokens is not None:
        month = _month_start(now).isoformat()
        used = int((s.one(_MONTH[column], {"id": it.ident, "month": month}) or (0,))[0])
        if used + int(held) + reserved > limits.monthly_tokens:
            raise QuotaExceeded(
                f"Monthly token budget of {scope} exhausted: {used} of "
                f"{limits.monthly_tokens} tokens used this month, this request needs up to "
                f"{reserved}.",
                "insufficient_quota",
                _seconds_to_next_month(now),
                refused,
            )
    return headers


_admissions = itertools.count()


def admit(
    db: Database,
    principal: Principal,
    request_id: str,
    reserved_tokens: int,
    now: float | None = None,
) -> Ticket:
    """Admit a request against its key's and tenant's limits, or raise QuotaExceeded."""
    with raw_transaction(db) as s:
        if db.backend == "postgresql":
            s.run(_LOCK_KEY_AND_TENANT, {"key": principal.key_id})
        return admit_in(s, principal, request_id, reserved_tokens, now)


def authorize_and_admit(
    db: Database,
    raw_key: str | None,
    roles: frozenset[Role],
    request_id: str,
    reserved_tokens: int,
    gate: Callable[[Principal], None] | None = None,
) -> tuple[Principal, Ticket]:
    """Key, role and quotas in one transaction: the request path's single database trip.

    `gate` runs once the principal is known and before anything is written: the checks that
    come between identity and admission (the stop switch, the tenant's policy). It must be
    quick and must not touch the database (the key's lock is held); what it raises goes up.
    Raises AuthError (401), Forbidden (403) or QuotaExceeded (429); nothing is written then.
    """
    digest = hash_key(principal_shape(raw_key))
    with raw_transaction(db) as s:
        locked = db.backend == "postgresql"
        row = s.one(_PRINCIPAL_LOCKED if locked else _PRINCIPAL, {"digest": digest})
        principal = principal_from_row(row, digest)
        if principal.role not in roles:
            raise Forbidden(principal.role, roles)
        if gate is not None:
            gate(principal)
        try:
            return principal, admit_in(s, principal, request_id, reserved_tokens)
        except QuotaExceeded as exc:
            exc.principal = principal  # for the audit record of the refusal
            raise


class Forbidden(Exception):
    """A role that may not use what it asked for (`roles`: the ones that may)."""

    def __init__(
        self, role: Role, roles: frozenset[Role] = frozenset(), area: str | None = None
    ) -> None:
        super().__init__(role.value)
        self.role = role
        self.roles = roles
        self.area = area
        """Refused a whole area (e.g. the administration API) rather than one route: its
        routes each allow fewer roles than `roles`, so the message names none."""


def admit_in(
    s: RawTransaction,
    principal: Principal,
    request_id: str,
    reserved_tokens: int,
    now: float | None = None,
) -> Ticket:
    """Admission inside a transaction that holds the key's and tenant's lock."""
    now = time.time() if now is None else now
    p = principal
    kscope, tscope = _scope_keys(p.key_id, p.tenant_id)
    key = _Scope("this API key", "key_id", p.key_id, kscope, p.key_limits)
    tenant = _Scope(f"tenant {p.tenant}", "tenant_id", p.tenant_id, tscope, p.tenant_limits)
    key_headers = _check_scope(s, key, reserved_tokens, now)
    tenant_headers = _check_scope(s, tenant, reserved_tokens, now)
    second = math.floor(now)
    row = {
        "rid": request_id,
        "key": p.key_id,
        "tenant": p.tenant_id,
        "now": now,
        "since": _window_floor(now),
        "lease": now + LEASE_S,
        "tokens": reserved_tokens,
        "kscope": kscope,
        "tscope": tscope,
        "second": second,
        "owner": INSTANCE_ID,
    }
    if next(_admissions) % 32 == 0:
        # Now and then forget this key's and tenant's buckets that no window can see any more.
        for stmt in _FORGET:
            s.run(stmt, row)
    s.run(_COUNT_REQUEST, row)
    s.run(_INSERT_INFLIGHT, row)
    key_binds = key_headers.limit_requests is not None or key_headers.limit_tokens is not None
    binding = key_headers if key_binds else tenant_headers
    return Ticket(request_id, p.key_id, p.tenant_id, reserved_tokens, binding, second)


def _adjust_buckets(s: RawTransaction, ticket: Ticket, requests: int, tokens: int) -> None:
    kscope, tscope = ticket.scopes
    params = {"kscope": kscope, "tscope": tscope, "second": ticket.second}
    s.run(_ADJUST_BUCKETS, {**params, "requests": requests, "tokens": tokens})


def settle(
    db: Database,
    ticket: Ticket,
    prompt_tokens: int,
    completion_tokens: int,
    now: float | None = None,
    energy: Energy | None = None,
) -> None:
    """Replace the reservation with actual usage and count it (and its energy) for the day."""
    with raw_transaction(db) as s:
        settle_in(s, ticket, prompt_tokens, completion_tokens, now, energy)


def settle_in(
    s: RawTransaction,
    ticket: Ticket,
    prompt_tokens: int,
    completion_tokens: int,
    now: float | None = None,
    energy: Energy | None = None,
) -> None:
    """settle() inside the caller's transaction (governance/instances.py settles a dead
    gateway's request whose end the log holds in the transaction that records it)."""
    now = time.time() if now is None else now
    day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    row = {"rid": ticket.request_id, "day": day, "key": ticket.key_id, "tenant": ticket.tenant_id}
    row |= {"prompt": prompt_tokens, "completion": completion_tokens}
    row |= {"joules": 0.0, "co2e": 0.0, "source": ""}
    if energy is not None:
        row |= {"joules": energy.joules, "co2e": energy.co2e_g or 0.0, "source": energy.source}
    if s.changed(_END_INFLIGHT, row):
        used = prompt_tokens + completion_tokens
        _adjust_buckets(s, ticket, 0, used - ticket.reserved_tokens)
    s.run(_COUNT_USAGE, row)


def release(db: Database, ticket: Ticket) -> None:
    """Undo an admission whose request never reached the engine (it is not counted)."""
    with raw_transaction(db) as s:
        if s.changed(_END_INFLIGHT, {"rid": ticket.request_id}):
            _adjust_buckets(s, ticket, -1, -ticket.reserved_tokens)
