"""The stop switch (AI Act Art. 14(4)(e)): a human halts everything, one model or one tenant.

Stops live in the database, so every gateway on it honours them: each refreshes its view a
few times a second. A stop refuses new requests with a message naming it. Requests in flight
either finish (`drain`) or end within a second with finish_reason "stop" (`cut`). `stop` and
`resume` are the admin API's and the command line's one way to make and lift one: each is
recorded in the audit log with its actor before it takes effect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from anyio import to_thread
from sqlalchemy import select

from sovllm.governance.audit import records
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction
from sovllm.store.schema import Stop as StopRow
from sovllm.store.schema import Tenant

log = logging.getLogger("sovllm.oversight")
Scope = Literal["all", "model", "tenant"]
Mode = Literal["drain", "cut"]
REFRESH_S = 0.25


@dataclass(frozen=True)
class Stop:
    scope: Scope
    target: str
    mode: Mode
    reason: str
    actor: dict[str, object]
    created_at: float

    def applies(self, model: str, tenant: str) -> bool:
        if self.scope == "all":
            return True
        return self.target == (model if self.scope == "model" else tenant)

    @property
    def what(self) -> str:
        return "the whole service" if self.scope == "all" else f"{self.scope} '{self.target}'"

    def message(self) -> str:
        since = dt.datetime.fromtimestamp(self.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        why = f": {self.reason}" if self.reason else ""
        return f"An administrator has stopped {self.what} since {since}{why}."

    def as_dict(self) -> dict[str, object]:
        """As the audit log records it and the API shows it."""
        return records.oversight_stop(self)


class NotServed(Exception):
    """A model stop names a model this gateway does not serve."""

    def __init__(self, model: str, served: Collection[str]) -> None:
        super().__init__(f"no model '{model}'; served: {', '.join(served)}")


class NoSuchTenant(Exception):
    """A tenant stop names no tenant: it would halt nothing and look in force."""

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} does not exist (`sovllm tenants list`)")


class NotStopped(Exception):
    """A resume of something that is not stopped; the caller words the message."""

    def __init__(self, scope: Scope, target: str) -> None:
        super().__init__(f"{scope} {target!r} is not stopped".replace(" ''", ""))
        self.scope = scope
        self.target = target


_FIND = SQL("SELECT 1 FROM stops WHERE scope = :scope AND target = :target")
_DELETE = SQL("DELETE FROM stops WHERE scope = :scope AND target = :target")
_INSERT = SQL(
    "INSERT INTO stops (scope, target, mode, reason, actor, created_at) "
    "VALUES (:scope, :target, :mode, :reason, :actor, :created_at)"
)


def list_stops(db: Database) -> list[Stop]:
    # Each gateway reads this four times a second: a plain read, never SQLite's write lock.
    with db.read() as s:
        rows = s.scalars(select(StopRow)).all()
    return [
        Stop(r.scope, r.target, r.mode, r.reason, json.loads(r.actor), r.created_at)  # type: ignore[arg-type]
        for r in rows
    ]


def new_stop(scope: Scope, target: str, mode: Mode, reason: str, actor: dict[str, object]) -> Stop:
    return Stop(scope, target if scope != "all" else "", mode, reason, actor, time.time())


def save_stop(db: Database, stop: Stop) -> Stop:
    """Put a stop in force (replacing the scope's earlier one). Record it in the audit log
    first: nothing may be refused or cut on account of a stop that has no record."""
    params = {"scope": stop.scope, "target": stop.target}
    with raw_transaction(db) as tx:
        tx.run(_DELETE, params)
        row = {"mode": stop.mode, "reason": stop.reason, "actor": json.dumps(stop.actor)}
        tx.run(_INSERT, params | row | {"created_at": stop.created_at})
    return stop


def stop(
    db: Database, write: records.Write, made: Stop, served: Collection[str] | None = None
) -> Stop:
    """Put `made` in force, recorded first: nothing is refused or cut on account of a stop that
    has no record. `served`: the models a model stop may name (None: any, as from the command
    line, where no pool is known); NotServed otherwise."""
    if made.scope == "model" and served is not None and made.target not in served:
        raise NotServed(made.target, served)
    if made.scope == "tenant" and not _tenant_exists(db, made.target):
        raise NoSuchTenant(made.target)
    write(records.STOP, records.oversight_stop(made))
    return save_stop(db, made)


def _tenant_exists(db: Database, name: str) -> bool:
    with db.read() as s:
        return s.scalar(select(Tenant.id).where(Tenant.name == name)) is not None


def resume(
    db: Database, write: records.Write, actor: Mapping[str, object], scope: Scope, target: str
) -> None:
    """Lift the stop of `scope` and `target`, recorded first; NotStopped if there is none."""
    if not is_stopped(db, scope, target):
        raise NotStopped(scope, target)
    write(records.RESUME, records.oversight_resume(actor, scope, target))
    remove_stop(db, scope, target)


def is_stopped(db: Database, scope: Scope, target: str) -> bool:
    with db.read() as s:
        found = s.get(StopRow, (scope, target if scope != "all" else ""))
    return found is not None


def remove_stop(db: Database, scope: Scope, target: str) -> bool:
    params = {"scope": scope, "target": target if scope != "all" else ""}
    with raw_transaction(db) as tx:
        found = tx.one(_FIND, params)
        tx.run(_DELETE, params)
    return found is not None


@dataclass
class Flight:
    """A request in flight, as the stop switch sees it."""

    model: str
    tenant: str
    cancel: Callable[[], None]
    stopped_by: Stop | None = field(default=None)


class Oversight:
    """This gateway's view of the stops, and the requests in flight that a cut would end."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.stops: list[Stop] = []
        self._flights: dict[str, Flight] = {}

    def blocking(self, model: str, tenant: str | None = None) -> Stop | None:
        """The stop that refuses this request (tenant None: check the model and 'all' only)."""
        for stop in self.stops:
            if stop.scope == "tenant" and tenant is None:
                continue
            if stop.applies(model, tenant or ""):
                return stop
        return None

    def track(self, request_id: str, flight: Flight) -> None:
        self._flights[request_id] = flight
        stop = self.blocking(flight.model, flight.tenant)
        if stop is not None and stop.mode == "cut":
            self._cut(flight, stop)  # stopped between admission and now

    def untrack(self, request_id: str) -> None:
        self._flights.pop(request_id, None)

    def apply(self, stops: list[Stop]) -> None:
        """Take a new list of stops; cut the flights a new `cut` stop covers."""
        self.stops = stops
        for stop in stops:
            if stop.mode != "cut":
                continue
            for flight in list(self._flights.values()):
                if flight.stopped_by is None and stop.applies(flight.model, flight.tenant):
                    self._cut(flight, stop)

    def _cut(self, flight: Flight, stop: Stop) -> None:
        log.warning("cutting a %s request of tenant %s: %s", flight.model, flight.tenant, stop.what)
        flight.stopped_by = stop
        flight.cancel()

    def refresh(self) -> list[Stop]:
        return list_stops(self._db)

    async def run(self) -> None:
        """Follow the database, where other gateways and the CLI write stops."""
        while True:
            try:
                self.apply(await to_thread.run_sync(self.refresh))
            except Exception:
                log.exception("reading the stops failed; keeping the last known ones")
            await asyncio.sleep(REFRESH_S)
