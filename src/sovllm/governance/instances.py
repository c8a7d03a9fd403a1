"""Gateway instances: the quota reservations of a gateway that died are released.

Admission writes an `inflight` row per request (governance/quotas.py), which settlement
deletes. A gateway killed mid-request never settles: its rows would count against the key's and
tenant's concurrency limit and monthly budget until their lease ran out (quotas.LEASE_S, 15
minutes). Several gateways may share one database, so a gateway may release only the rows of
processes that are dead, and must prove it. Each row names its owner (quotas.INSTANCE_ID), and
each gateway has a `gateway_instances` row: its host, pid and process start time, and a
heartbeat it renews every HEARTBEAT_S on the database's clock. An instance is dead when

- it is on this gateway's host (same boot id and pid namespace, so its pid means the same
  process here) and no process with its pid and start time runs: proven at once, which is the
  case of a gateway restarted after a crash (systemd, the kill loop); or
- its heartbeat is older than STALE_S: a gateway on another host that stopped, or a host that
  went away. A gateway that is alive but stalled that long (it would have to miss six
  heartbeats) loses its reservations early; its requests still settle and are counted, only
  the concurrency slots were free sooner. It registers again at its next heartbeat.

Every gateway looks at start-up and at each heartbeat. The release is one transaction per dead
instance: its row is deleted first (the claim: two gateways starting together release it once),
then its in-flight rows, with one `quota.released` audit entry naming them. A request whose
`request.end` is already in the log (gateway/run.py writes it durable before settling) is
settled from that entry when its gateway is proven dead, so usage matches the log; any other is
a request cut by the crash, listed as `released`: its reservation is dropped, nothing is
counted (what it computed before the crash is not known). A stale instance's rows are only
released, never settled: its owner may still be alive and settle them itself. The rate buckets
of the released requests are left as they are: they leave the window within a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio import to_thread

from sovllm.governance import quotas
from sovllm.governance.audit import records
from sovllm.governance.audit.log import AuditLog
from sovllm.store.db import Database
from sovllm.store.raw import SQL, RawTransaction, raw_transaction

log = logging.getLogger("sovllm.quotas")

HEARTBEAT_S = 10.0
STALE_S = 60.0
RELEASED = "quota.released"
"""The audit entry of a release: the dead instance, why it is taken for dead, its requests."""

# The database's clock, in POSIX seconds: heartbeats are written and aged on one clock, whatever
# the gateways' hosts think the time is.
_NOW = "(julianday('now') - 2440587.5) * 86400.0"
_PG_NOW = "extract(epoch from clock_timestamp())::float8"


def _on_db_clock(text: str) -> SQL:
    return SQL(text.format(now=_NOW), postgresql=text.format(now=_PG_NOW))


# An upsert: apps built in one process (tests) share the process's id, and its row.
_REGISTER = _on_db_clock(
    "INSERT INTO gateway_instances (id, host, hostname, pid, proc_start, started_at, "
    "heartbeat_at) VALUES (:id, :host, :hostname, :pid, :start, :started, {now}) "
    "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
_BEAT = _on_db_clock("UPDATE gateway_instances SET heartbeat_at = {now} WHERE id = :id")
_OTHERS = _on_db_clock(
    "SELECT id, host, hostname, pid, proc_start, started_at, {now} - heartbeat_at "
    "FROM gateway_instances WHERE id <> :id"
)
_CLAIM = SQL("DELETE FROM gateway_instances WHERE id = :id")
_ROWS = SQL(
    "SELECT request_id, key_id, tenant_id, started_at, reserved_tokens FROM inflight "
    "WHERE owner = :id ORDER BY started_at"
)
_DROP = SQL("DELETE FROM inflight WHERE owner = :id")
_END = SQL(
    "SELECT body FROM audit_entries WHERE request_id = :rid AND kind = :kind "
    "AND body IS NOT NULL ORDER BY seq DESC LIMIT 1"
)


@dataclass(frozen=True)
class Me:
    """This process as the instances table records it."""

    id: str
    host: str
    """Boot id and pid namespace ("" without /proc: then only the heartbeat tells)."""
    hostname: str
    pid: int
    start: int
    """Clock ticks since boot at which the process started (/proc/PID/stat, field 22)."""


def _host() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None if none runs (a zombie is
    dead: it has exited and only waits for its parent to read its status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in brackets, may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def me() -> Me:
    pid = os.getpid()
    return Me(quotas.INSTANCE_ID, _host(), socket.gethostname(), pid, start_ticks(pid) or 0)


@dataclass(frozen=True)
class Released:
    """What one release did, as its audit entry says."""

    instance: str
    reason: str  # process_gone or heartbeat_stale
    released: list[str]
    settled: list[str]
    seq: int


def register(db: Database) -> None:
    """Put this process in the table (before it admits anything)."""
    m = me()
    params = {"id": m.id, "host": m.host, "hostname": m.hostname, "pid": m.pid}
    with raw_transaction(db) as s:
        s.run(_REGISTER, params | {"start": m.start, "started": time.time()})


def deregister(db: Database) -> None:
    """A clean stop, once every request has settled: nothing of this process is left."""
    with raw_transaction(db) as s:
        s.run(_CLAIM, {"id": quotas.INSTANCE_ID})


def heartbeat(db: Database) -> None:
    with raw_transaction(db) as s:
        beat = s.changed(_BEAT, {"id": quotas.INSTANCE_ID})
    if not beat:  # another gateway took this one for dead (STALE_S without a heartbeat)
        log.warning("this gateway's instance row was gone (taken for dead): registering again")
        register(db)


def _dead(m: Me, host: str, pid: int, start: int, age: float) -> str | None:
    if m.host and host == m.host and start_ticks(pid) != start:
        return "process_gone"
    if age > STALE_S:
        return "heartbeat_stale"
    return None


def release_dead(db: Database, audit: AuditLog) -> list[Released]:
    """Release the in-flight rows of every other instance that is dead; one entry each."""
    m = me()
    with raw_transaction(db) as s:
        others = s.all(_OTHERS, {"id": m.id})
    done = []
    for ident, host, hostname, pid, start, started_at, age in others:
        reason = _dead(m, str(host), int(pid), int(start), float(age))
        if reason is None:
            continue
        owner = {"id": ident, "hostname": hostname, "pid": pid, "started_at": started_at}
        released = _release(db, audit, m, owner, reason)
        if released is not None:
            done.append(released)
            log.warning(
                "released the reservations of gateway %s (pid %s on %s, %s): %d cut by its end, "
                "%d settled from the audit log (entry %d)",
                ident,
                pid,
                hostname,
                reason,
                len(released.released),
                len(released.settled),
                released.seq,
            )
    return done


def _release(
    db: Database, audit: AuditLog, m: Me, owner: dict[str, Any], reason: str
) -> Released | None:
    with raw_transaction(db) as s:
        audit.lock(s)  # the log's lock before any row's: the order every appender takes
        if not s.changed(_CLAIM, {"id": owner["id"]}):
            return None  # another gateway released it meanwhile
        released, settled = [], []
        for rid, key_id, tenant_id, started_at, reserved in s.all(_ROWS, {"id": owner["id"]}):
            end = _end_tokens(s, str(rid)) if reason == "process_gone" else None
            if end is None:
                released.append(str(rid))
                continue
            second = int(float(started_at))  # the admission's second (quotas.admit_in)
            ticket = quotas.Ticket(
                str(rid), str(key_id), int(tenant_id), int(reserved), quotas.RateLimitHeaders(),
                second,
            )  # fmt: skip
            quotas.settle_in(s, ticket, *end)
            settled.append(str(rid))
        s.run(_DROP, {"id": owner["id"]})
        actor = {"job": "quota_release", "instance": m.id, "hostname": m.hostname}
        body = {"actor": actor, "instance": owner, "reason": reason}
        body |= {"released": released, "settled": settled}
        seq = audit.append_in(s, RELEASED, body)
    return Released(str(owner["id"]), reason, released, settled, seq)


def _end_tokens(s: RawTransaction, rid: str) -> tuple[int, int] | None:
    """The token counts of the request's `request.end` entry, if the log holds one."""
    row = s.one(_END, {"rid": rid, "kind": records.END})
    if row is None:
        return None
    tokens = json.loads(row[0]).get("tokens") or {}
    return int(tokens.get("prompt", 0)), int(tokens.get("completion", 0))


def start(db: Database, audit: AuditLog) -> list[Released]:
    """At a gateway's start: register, then release what dead gateways left."""
    register(db)
    return release_dead(db, audit)


async def run(db: Database, audit: AuditLog) -> None:
    """The heartbeat, and a look for dead gateways with each (a task of the app's lifespan)."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await to_thread.run_sync(heartbeat, db)
            await to_thread.run_sync(release_dead, db, audit)
        except Exception:
            log.exception("gateway heartbeat failed")
