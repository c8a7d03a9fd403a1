"""`sovllm worker`: one embedded engine behind the worker protocol, for a gateway's pool.

A worker has no keys, tenants or audit log of its own: the gateway does all of that and then
hands the request on. It listens on loopback by default, and when the gateway started it, it
accepts only the bearer token the gateway passed in its environment.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from sovllm import __version__, datadir
from sovllm.config import Settings
from sovllm.engines.base import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    QueueFullError,
)
from sovllm.engines.catalog import ModelNotFoundError
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.model import ModelLoadError
from sovllm.observability import logs, tracing
from sovllm.observability.metrics import CONTENT_TYPE, Metrics
from sovllm.observability.tracing import Telemetry
from sovllm.pool import wire
from sovllm.pool.children import PARENT_ENV
from sovllm.serve import tls
from sovllm.serve.gateway import ServeError, check_port, open_telemetry
from sovllm.serve.http_shutdown import ShutdownProtocol


def _error(status: int, message: str, type_: str, **extra: Any) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, **extra}}
    return JSONResponse(body, status)


def error_for(exc: EngineError) -> JSONResponse:
    """An engine refusal, in a shape RemoteEngine turns back into the same exception."""
    if isinstance(exc, QueueFullError):
        return _error(429, str(exc), "queue_full", retry_after=exc.retry_after_s)
    if isinstance(exc, InvalidRequestError):
        return _error(400, str(exc), "invalid_request", param=exc.param)
    return _error(503, str(exc), "unavailable")


def create_worker_app(
    engine: LlamaCppEngine, token: str | None, telemetry: Telemetry | None = None
) -> FastAPI:
    """The worker's app. With `telemetry` on, a request that brings a `traceparent` (the
    gateway's request span) gets its HTTP span and an engine span in the same trace."""
    metrics: list[Metrics] = []
    telemetry = telemetry or tracing.disabled()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        metrics.append(Metrics([engine.model.id], lambda _: engine.stats()))
        try:
            yield
        finally:
            engine.shutdown()
            telemetry.shutdown()

    app = FastAPI(
        title="sovllm worker",
        version=__version__,
        lifespan=lifespan,
        telemetry=telemetry.fastapi(),
    )

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "this worker accepts only its gateway's token", "auth")
        response: Response = await call_next(request)
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.healthy
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, 200 if ok else 503)

    @app.get(wire.INFO_PATH)
    async def info() -> JSONResponse:
        try:
            return JSONResponse(wire.info_to_json(engine.model, engine.stats()))
        except EngineUnavailableError as exc:
            return error_for(exc)

    @app.get("/metrics")
    async def render_metrics() -> Response:
        return Response(metrics[0].render() if metrics else b"", media_type=CONTENT_TYPE)

    @app.post(wire.GENERATE_PATH)
    async def generate(request: Request) -> Response:
        try:
            gen = wire.request_from_json(await request.json())
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, f"malformed engine request: {exc!r}", "invalid_request")
        try:
            stream = engine.submit(gen)
        except EngineError as exc:
            return error_for(exc)

        async def lines() -> AsyncIterator[bytes]:
            # Starlette cancels this generator when the gateway disconnects: the slot is freed.
            try:
                async for out in stream:
                    if out.finished:
                        tracing.engine_span(telemetry, engine.model.id, out)
                    yield json.dumps(wire.output_to_json(out)).encode() + b"\n"
            finally:
                stream.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


def run_worker(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
    try:
        settings.resolve_model(derive=False)  # a bad name fails before anything is made
    except ModelNotFoundError as exc:
        raise ServeError(f"invalid setting 'model': {exc}") from None
    token = os.environ.get(wire.TOKEN_ENV) or None
    if token is None and not _loopback(settings.host):
        raise ServeError(
            f"a worker listening on {settings.host} must require a token: set {wire.TOKEN_ENV} "
            "(and the gateway's replica `api_key_env`), or listen on 127.0.0.1"
        )
    try:
        datadir.prepare(settings)  # the model cache goes under data_dir, private like the rest
    except OSError as exc:
        raise ServeError(f"cannot create data_dir {settings.data_dir}: {exc.strerror}") from None
    try:  # a catalog model served derived is made here, with the private umask in force
        source = settings.resolve_model()
    except ModelNotFoundError as exc:
        raise ServeError(f"invalid setting 'model': {exc}") from None
    try:  # the files its gateway made for it, else its own tls.* (a worker run by hand)
        https = tls.worker_options() or tls.uvicorn_options(settings.tls)
    except tls.TlsError as exc:
        raise ServeError(str(exc)) from None
    check_port(settings.host, settings.port)
    telemetry = open_telemetry(settings, "worker")
    _exit_with_parent()
    engine = LlamaCppEngine(
        source, settings.engine, settings.served_model_name, cache_dir=settings.data_dir / "cache"
    )
    app = create_worker_app(engine, token, telemetry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=logs.uvicorn_config(settings.log_format),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        http=ShutdownProtocol,  # a gateway's idle pooled connection does not hold up a stop
        **https,
    )
    try:
        uvicorn.Server(config).run()
    except ModelLoadError as exc:
        raise ServeError(str(exc)) from None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exit_with_parent() -> None:
    """A worker started by a gateway stops when that gateway is gone, even killed outright."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while True:
            if os.getppid() != int(parent):
                logging.getLogger("sovllm.worker").warning("the gateway is gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)  # polling the parent: there is no portable event for its death

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
