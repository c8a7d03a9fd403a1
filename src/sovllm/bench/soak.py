"""`sovllm bench --soak`: a long run of the chat users beside an operator at work.

While the users chat (the ordinary closed loop, under a tenant of the soak's own), an admin
actor works through the admin API, one step at a time: reads (keys, usage, stops, pool,
tenants, audit entries, the last verification, the checkpoint) every `admin_every_s`, and a key
cycle every `key_every_s` (create a key, answer one request with it, revoke it, check it is
refused). Beside it, on its own schedule, a stop cycle every `stop_every_s` (stop the tenant,
the model or everything, in `cut` or `drain` mode, for `stop_hold_s`, then resume). A sampler
reads the
server's /metrics every `sample_every_s`. At the end (`finish`): the audit log is verified and
the tenant's usage reconciled with its `request.end` entries (soak_check.py judges the targets).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from sovllm.bench.client import _root
from sovllm.bench.runner import Run, RunResult
from sovllm.bench.soak_check import overlaps
from sovllm.bench.soak_sample import Sample, scrape

# The stop cycles go round these, so each scope and mode is exercised.
STOP_CYCLE = (("tenant", "cut"), ("all", "drain"), ("model", "cut"), ("tenant", "drain"))
READS = (
    "/keys?tenant={tenant}",
    "/usage?tenant={tenant}",
    "/stops",
    "/pool",
    "/tenants",
    "/audit/entries?limit=20",
    "/audit/verify/last",
    "/audit/checkpoint",
)
ADMIN = "/admin/v1"


@dataclass(frozen=True)
class SoakPlan:
    admin_key: str
    tenant: str
    tenant_created_at: float
    """The server's time (POSIX s) when it made the tenant: no request of its came before."""
    sample_every_s: float = 10.0
    admin_every_s: float = 5.0
    key_every_s: float = 30.0
    stop_every_s: float = 120.0
    stop_hold_s: float = 5.0
    server_pid: int | None = None
    max_rss_growth: float = 0.10

    def start(self, run: Run) -> SoakRun:
        return SoakRun(self, run)


@dataclass
class Call:
    t_s: float
    what: str
    status: int | None
    """HTTP status; None when no answer came (connection error, timeout)."""
    seconds: float
    expected: tuple[int, ...]
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in self.expected


@dataclass
class StopWindow:
    scope: str
    mode: str
    start: float
    """perf_counter when the stop was sent."""
    end: float | None = None
    """perf_counter when the resume was answered."""


@dataclass
class SoakState:
    samples: list[Sample] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    stops: list[StopWindow] = field(default_factory=list)
    key_cycles: int = 0


class SoakRun:
    def __init__(self, plan: SoakPlan, run: Run) -> None:
        self.plan = plan
        self.run = run
        self.state = SoakState()
        root = _root(run.client.base_url)
        self.root = root
        self.http = httpx.AsyncClient(
            base_url=root,
            headers={"Authorization": f"Bearer {plan.admin_key}"},
            # A key cycle's request waits its turn behind the users': as long as theirs may.
            timeout=run.bounds.request_timeout_s,
        )
        self._stop_in_force: StopWindow | None = None
        self._tasks = [
            asyncio.ensure_future(self._sampler()),
            asyncio.ensure_future(self._admin()),
            asyncio.ensure_future(self._stopper()),
        ]

    # -- helpers ----------------------------------------------------------------------------

    def rel(self, t: float) -> float:
        return t - self.run.t0

    async def call(
        self,
        method: str,
        path: str,
        expected: tuple[int, ...] = (200,),
        key: str | None = None,
        **kw: Any,
    ) -> httpx.Response | None:
        """One request, recorded; None when no answer came."""
        headers = {"Authorization": f"Bearer {key}"} if key else None
        start = time.perf_counter()
        response: httpx.Response | None = None
        note = ""
        try:
            response = await self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            note = f"{type(exc).__name__}: {exc}"[:200]
        status = response.status_code if response is not None else None
        if response is not None and status not in expected:
            note = response.text[:200]
        what = f"{method} {path.split('?', 1)[0]}"
        seconds = time.perf_counter() - start
        self.state.calls.append(Call(self.rel(start), what, status, seconds, expected, note))
        return response

    # -- the loops --------------------------------------------------------------------------

    async def _sampler(self) -> None:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self.plan.admin_key}"}, timeout=30.0
        ) as http:
            due = time.perf_counter()
            while True:
                await self.sample(http)
                due += self.plan.sample_every_s
                if not await self.run.sleep_until(due):
                    return

    async def sample(self, http: httpx.AsyncClient) -> None:
        now = time.perf_counter()
        values = await scrape(http, f"{self.root}/metrics", self.plan.server_pid)
        if values:
            self.state.samples.append(Sample(round(self.rel(now), 3), values))

    async def _admin(self) -> None:
        """Reads and key cycles, one at a time."""
        p = self.plan
        now = time.perf_counter()
        next_read, next_key = now, now + p.key_every_s
        reads = 0
        while not self.run.stop.is_set():
            now = time.perf_counter()
            if now >= next_key:
                await self._key_cycle()
                next_key = time.perf_counter() + p.key_every_s
            elif now >= next_read:
                path = READS[reads % len(READS)].format(tenant=self.plan.tenant)
                expected = (200, 404) if path.endswith("/verify/last") else (200,)
                await self.call("GET", f"{ADMIN}{path}", expected)
                reads += 1
                next_read = time.perf_counter() + p.admin_every_s
            elif not await self.run.sleep_until(min(next_read, next_key)):
                return

    async def _stopper(self) -> None:
        """Stops on their own schedule: a key cycle's request, slow behind the users', does not
        hold them up."""
        due = time.perf_counter() + self.plan.stop_every_s
        while await self.run.sleep_until(due):
            await self._stop_cycle()
            due = time.perf_counter() + self.plan.stop_every_s

    async def _chat(self, key: str, expected: tuple[int, ...]) -> httpx.Response | None:
        body = {
            "model": self.run.target.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 4,
        }
        return await self.call("POST", "/v1/chat/completions", expected, key=key, json=body)

    async def _key_cycle(self) -> None:
        """A key is made, used, revoked, and refused from then on."""
        body = {"tenant": self.plan.tenant, "role": "user", "name": "soak key cycle"}
        made = await self.call("POST", f"{ADMIN}/keys", (201,), json=body)
        if made is None or made.status_code != 201:
            return
        key, key_id = made.json()["key"], made.json()["id"]
        await self._chat(key, (200,))
        used = self.state.calls[-1]
        if used.status == 503 and overlaps(
            self.run.t0 + used.t_s, self.run.t0 + used.t_s + used.seconds, self.state.stops
        ):
            used.expected, used.note = (200, 503), "refused by a stop"
        await self.call("POST", f"{ADMIN}/keys/{key_id}/revoke")
        await self._chat(key, (401,))
        self.state.key_cycles += 1

    async def _stop_cycle(self) -> None:
        scope, mode = STOP_CYCLE[len(self.state.stops) % len(STOP_CYCLE)]
        target = {"tenant": self.plan.tenant, "model": self.run.target.model}.get(scope)
        window = StopWindow(scope, mode, time.perf_counter())
        self.state.stops.append(window)
        self._stop_in_force = window
        body = {"scope": scope, "target": target, "mode": mode, "reason": "sovllm bench --soak"}
        await self.call("POST", f"{ADMIN}/stop", json=body)
        # The hold ends early if the run does: the stop is then lifted at once (finish).
        await self.run.sleep_until(time.perf_counter() + self.plan.stop_hold_s)
        await self._resume()

    async def _resume(self) -> None:
        window = self._stop_in_force
        if window is None:
            return
        target = {"tenant": self.plan.tenant, "model": self.run.target.model}.get(window.scope)
        await self.call("POST", f"{ADMIN}/resume", json={"scope": window.scope, "target": target})
        window.end = time.perf_counter()
        self._stop_in_force = None

    # -- the end ----------------------------------------------------------------------------

    async def finish(self, result: RunResult) -> dict[str, Any]:
        """After the run (requests in flight done): lift any stop, sample once more, verify the
        log and reconcile usage; everything soak_check.py needs to judge the targets."""
        for task in self._tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        from sovllm.bench import soak_check

        try:
            await self._resume()
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {self.plan.admin_key}"}, timeout=30.0
            ) as http:
                await self.sample(http)
            verify = await self._verify()
            usage = await soak_check.reconcile(self, self.plan.tenant)
        finally:
            await self.http.aclose()
        return soak_check.judge(self, result, verify, usage)

    async def _verify(self) -> dict[str, Any]:
        r = await self.call("POST", f"{ADMIN}/audit/verify")
        if r is None or r.status_code != 200:
            return {"ok": False, "summary": "the verification could not run"}
        doc: dict[str, Any] = r.json()
        return {k: doc.get(k) for k in ("ok", "size", "checkpoints", "summary", "problems")}
