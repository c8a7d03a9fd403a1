"""The FastAPI application factory: the API's and the web front end's routes around one gateway
state, with the middleware and the background jobs (retention, stops, access log)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from sovllm import __version__
from sovllm.api import errors
from sovllm.api.admin_gate import AdminGate
from sovllm.api.admin_routes import router as admin_router
from sovllm.api.audit_routes import router as audit_router
from sovllm.api.auth import identify
from sovllm.api.energy_routes import router as energy_router
from sovllm.api.failsafe import RequestGuard
from sovllm.api.incident_routes import router as incident_router
from sovllm.api.limits import BodyLimit
from sovllm.api.me import router as me_router
from sovllm.api.model_routes import router as model_router
from sovllm.api.openai_routes import router as openai_router
from sovllm.api.oversight_routes import router as oversight_router
from sovllm.api.review_routes import router as review_router
from sovllm.api.state import app_state
from sovllm.api.stored_completions import router as stored_completions_router
from sovllm.config import Settings
from sovllm.gateway.state import AppState
from sovllm.governance import instances, retention
from sovllm.governance.access import AccessGuard
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.oversight import Oversight
from sovllm.governance.privacy.content import open_vault
from sovllm.observability import database_metrics, tracing
from sovllm.observability.audit_metrics import AuditCollector
from sovllm.observability.clock import ClockCollector, ClockWatch
from sovllm.observability.energy import EnergyMeter
from sovllm.observability.energy import disabled as no_energy
from sovllm.observability.energy.metrics import EnergyCollector
from sovllm.observability.incident_metrics import IncidentCollector
from sovllm.observability.key_metrics import KeyAgeCollector, key_files
from sovllm.observability.metrics import CONTENT_TYPE, Metrics
from sovllm.observability.pool_metrics import PoolCollector
from sovllm.observability.service_metrics import DataVolumeCollector, StopsCollector
from sovllm.observability.tracing import Telemetry
from sovllm.pool.backends.local import LocalBackend
from sovllm.pool.router import Pool
from sovllm.serve.startup_failure import StartupFailure
from sovllm.store.db import Database
from sovllm.web.routes import router as web_router
from sovllm.web.security import EXPOSED_HEADERS, SecurityHeaders

log = logging.getLogger("sovllm.retention")


async def _retention(state: AppState) -> None:
    """The retention job (governance/retention.py): content, audit bodies and usage days past
    their `retention.*` settings, every `retention.purge_every_s`."""
    settings = state.settings.retention
    while True:
        try:
            await to_thread.run_sync(
                retention.run, settings, state.vault, state.audit, {"job": "retention"}
            )
        except Exception:
            log.exception("retention job failed")
        await asyncio.sleep(settings.purge_every_s)


def create_app(
    settings: Settings,
    pool: Pool,
    db: Database,
    audit: AuditLog,
    telemetry: Telemetry | None = None,
    energy: EnergyMeter | None = None,
) -> FastAPI:
    """Build the app around a replica pool, which the app's lifespan starts and stops.

    `telemetry`: where traces and GenAI metrics go (serve/gateway.open_telemetry); none by
    default. FastAPI's own HTTP telemetry runs on the same providers."""
    telemetry = telemetry or tracing.disabled()
    meter = energy or no_energy()
    # Engines in this process tell the meter of each step; with no counter there is nothing
    # to share, and the engine's step loop is spared the calls.
    for replica in pool.replicas if meter.source is not None else ():
        if isinstance(replica.backend, LocalBackend):
            # Tests run scripted stand-ins for the engine, which have no steps to tell of.
            observe = getattr(replica.backend.engine, "observe_steps", None)
            if observe is not None:
                observe(meter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.start()
        audit.start()
        # Before the first admission: this gateway's instance row, and the in-flight rows of
        # gateways that died released (audited; governance/instances.py).
        await to_thread.run_sync(instances.start, db, audit)
        metrics = Metrics(pool.model_ids, pool.stats)
        metrics.registry.register(PoolCollector(pool))
        metrics.registry.register(KeyAgeCollector(key_files(settings)))
        vault = open_vault(settings, db)
        oversight = Oversight(db)
        oversight.apply(await to_thread.run_sync(oversight.refresh))
        metrics.registry.register(StopsCollector(oversight))
        metrics.registry.register(IncidentCollector(db))
        # The clock's state goes into the log before the first request (ISO/IEC 27001 A.8.17).
        clock = ClockWatch(audit)
        await clock.check("start")
        app.state.clock = clock
        metrics.registry.register(ClockCollector(clock))
        metrics.registry.register(AuditCollector(db))
        metrics.registry.register(DataVolumeCollector(settings.data_dir))
        database_metrics.register(metrics.registry, db)
        metrics.registry.register(EnergyCollector(meter))
        access = AccessGuard(settings.security.auth_failures_per_minute)
        state = AppState(
            settings, pool, metrics, db, audit, vault, oversight, access, telemetry, energy=meter
        )
        app.state.sovllm = state
        tasks = [
            asyncio.create_task(_retention(state)),
            asyncio.create_task(oversight.run()),
            asyncio.create_task(access.run(audit)),
            asyncio.create_task(clock.run()),
            asyncio.create_task(instances.run(db, audit)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await pool.shutdown()
            # Requests' settlements and kept content still under way go in before the log
            # closes (each is a database write and, for content, an audit entry).
            await state.background.drain()
            await to_thread.run_sync(instances.deregister, db)  # every request has settled
            # The open minute's refusals go in before the log writes its last checkpoint.
            access.flush(audit, everything=True)
            audit.close()
            telemetry.shutdown()  # after the log: the last requests' spans end with its writes
            meter.close()

    app = FastAPI(
        title="sovllm",
        version=__version__,
        description="OpenAI-compatible API of a private, compliant LLM service.",
        lifespan=lifespan,
        telemetry=telemetry.fastapi(),
    )
    errors.install(app)
    app.include_router(openai_router)
    app.include_router(admin_router)
    app.include_router(audit_router)
    app.include_router(energy_router)
    app.include_router(model_router)
    app.include_router(oversight_router)
    app.include_router(incident_router)
    app.include_router(review_router)
    app.include_router(stored_completions_router)
    app.include_router(me_router)
    app.include_router(web_router)
    # A body over server.max_body_bytes is refused as it streams in (innermost: its 413 gets
    # a request id and the headers below).
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    # No key, a bad one or a `user` key gets no further into /admin/v1 than this (its body
    # unread).
    app.add_middleware(AdminGate)
    # Request ids, and an OpenAI-shaped answer to any unexpected exception (inside CORS and
    # the security headers, so its answers pass them).
    app.add_middleware(RequestGuard)
    # CORS stays closed (no cross-origin reads) unless the operator lists origins; CSP and
    # nosniff on every response (the outermost middleware).
    origins = settings.cors_allow_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(SecurityHeaders)
    # A start-up refused for a reason the operator is to read says it in one line.
    app.add_middleware(StartupFailure)

    @app.get("/health", include_in_schema=True)
    async def health(request: Request) -> JSONResponse:
        """Liveness: the process answers and the engine thread is alive."""
        ok = app_state(request).pool.healthy
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, 200 if ok else 503)

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """Readiness: the model is loaded and requests are accepted."""
        state: AppState | None = getattr(request.app.state, "sovllm", None)
        if state is None or not state.pool.healthy:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "models": [m.id for m in state.pool.models()]})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = app_state(request)
        if state.settings.metrics_require_key:
            await identify(request)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app
