"""`sovllm serve`: resolve the model, build the engine and the app, run uvicorn."""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from sovllm.api.app import create_app
from sovllm.config import Settings
from sovllm.engines.catalog import ModelNotFoundError, resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.model import ModelLoadError


class ServeError(Exception):
    pass


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run_server(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServeError(f"cannot create data_dir {settings.data_dir}: {exc.strerror}") from None
    if not os.access(settings.data_dir, os.W_OK):
        raise ServeError(f"data_dir {settings.data_dir} is not writable")
    try:
        source = resolve_model(settings.model)
    except ModelNotFoundError as exc:
        raise ServeError(f"invalid setting 'model': {exc}") from None
    _check_port(settings.host, settings.port)
    engine = LlamaCppEngine(
        source, settings.engine, settings.served_model_name, cache_dir=settings.data_dir / "cache"
    )
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    try:
        uvicorn.Server(config).run()
    except ModelLoadError as exc:
        raise ServeError(str(exc)) from None
