"""`sovllm serve`: resolve the model, build the engine and the app, run uvicorn."""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from sovllm import datadir
from sovllm.config import Settings
from sovllm.engines.llamacpp.model import ModelLoadError, check_gpu_layers
from sovllm.governance import bootstrap
from sovllm.governance.audit import PseudonymKeyError, open_audit
from sovllm.governance.privacy import pii
from sovllm.governance.privacy.masterkey import MasterKeyError
from sovllm.observability import logs, tracing
from sovllm.observability.energy.counters import EnergyUnavailable
from sovllm.serve import build, http_limits, provenance, tls
from sovllm.serve.app import create_app
from sovllm.serve.energy import open_energy
from sovllm.serve.replicas import PoolConfigError, check_egress, derive_models, describe, plan
from sovllm.store.db import Database, DatabaseConfigError, database_url, hide_password
from sovllm.store.migrate import upgrade


class ServeError(Exception):
    pass


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def open_database(settings: Settings) -> Database:
    """Connect and migrate to the latest schema, or raise ServeError saying why not."""
    try:
        db = Database(
            database_url(settings.database_url, settings.data_dir), settings.audit.durability
        )
        upgrade(db)
    except DatabaseConfigError as exc:
        raise ServeError(f"invalid setting {exc}") from None
    except SQLAlchemyError as exc:
        reason = hide_password(_first_line(exc), settings.database_url)
        raise ServeError(f"cannot open the database: {exc.__class__.__name__}: {reason}") from None
    return db


def open_telemetry(settings: Settings, role: str = "") -> tracing.Telemetry:
    """The telemetry pipeline: none without `telemetry.otlp_endpoint`, and an endpoint outside
    loopback and private networks only where `egress_allow` lists it. `role` ("worker")
    is appended to the service name, so a trace shows which process a span comes from."""
    t = settings.telemetry
    if t.otlp_endpoint is None:
        return tracing.disabled()
    setting = "invalid setting 'telemetry.otlp_endpoint'"
    try:
        check_egress(t.otlp_endpoint, settings.egress_allow, "telemetry", subject=setting)
    except PoolConfigError as exc:
        raise ServeError(str(exc)) from None
    return tracing.exporting(
        tracing.ExportSettings(
            t.otlp_endpoint, "-".join(filter(None, [t.service_name, role])), t.sample_ratio
        )
    )


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__


def run_server(
    settings: Settings,
    replicas: int | None = None,
    dry_run: bool = False,
    config_file: Path | None = None,
) -> None:
    logs.configure(settings.log_level, settings.log_format)
    # The pool probes every replica twice a second: keep httpx's per-request lines out.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        plans = plan(settings, replicas, config_file)
    except PoolConfigError as exc:
        raise ServeError(str(exc)) from None
    if dry_run:
        print(describe(plans), flush=True)
        return
    if settings.engine.gpu_layers and any(p.kind in ("local", "embedded") for p in plans):
        try:  # here, in one line, before a model is derived or a traceback comes from the first engine's load
            check_gpu_layers(settings.engine.gpu_layers)
        except ModelLoadError as exc:
            raise ServeError(str(exc)) from None
    try:
        datadir.prepare(settings)  # LoosePermissions in strict mode: the CLI exits with 2
    except OSError as exc:
        raise ServeError(f"cannot create data_dir {settings.data_dir}: {exc.strerror}") from None
    if not os.access(settings.data_dir, os.W_OK):
        raise ServeError(f"data_dir {settings.data_dir} is not writable")
    try:
        derive_models(settings)  # the files plan() named, made now that the folder is private
    except PoolConfigError as exc:
        raise ServeError(str(exc)) from None
    for spec in settings.privacy.detectors:
        try:
            pii.load_detector(spec)
        except pii.DetectorSpecError as exc:
            raise ServeError(f"invalid setting 'privacy.detectors': {exc}") from None
    if settings.privacy.presidio:
        try:
            pii.use_presidio()
        except ImportError:
            raise ServeError(
                "invalid setting 'privacy.presidio': Presidio is not installed "
                "(pip install 'sovllm[presidio]')"
            ) from None
    try:  # a certificate or key that cannot be used stops here, naming the setting
        https = tls.uvicorn_options(settings.tls)
    except tls.TlsError as exc:
        raise ServeError(str(exc)) from None
    check_port(settings.host, settings.port)
    telemetry = open_telemetry(settings)
    try:
        energy = open_energy(settings)
    except (EnergyUnavailable, PoolConfigError) as exc:
        raise ServeError(str(exc)) from None
    db = open_database(settings)
    try:
        key_file = bootstrap.create_first_key(db, settings.data_dir)
    except bootstrap.BootstrapKeyError as exc:
        raise ServeError(str(exc)) from None
    if key_file is not None:  # where the key is, never the key: this output reaches logs
        print(bootstrap.announcement(key_file, config_file), flush=True)
    try:  # before the replicas start: a wrong pseudonym key file stops here, in one line
        audit = open_audit(settings, db)
    except (PseudonymKeyError, MasterKeyError) as exc:
        raise ServeError(str(exc)) from None
    try:  # before any weights are loaded or any replica is started
        provenance.check(settings, plans, audit)
    except provenance.ModelNotApproved as exc:
        raise ServeError(str(exc)) from None
    try:
        pool = build.start(settings, plans)
    except PoolConfigError as exc:
        raise ServeError(str(exc)) from None
    app = create_app(settings, pool, db, audit, telemetry, energy)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=logs.uvicorn_config(settings.log_format),
        # SIGTERM: stop accepting, let requests in flight finish, then stop the replicas.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        # X-Forwarded-For only from the configured proxies (uvicorn's default trusts
        # 127.0.0.1): the source address is what failed sign-ins are counted by.
        proxy_headers=bool(settings.security.trusted_proxies),
        forwarded_allow_ips=settings.security.trusted_proxies or None,
        # Header size and read deadlines (server.*), which uvicorn does not bound.
        http=http_limits.protocol(settings.server),
        **https,  # tls.*: HTTPS only, client certificates where tls.client_ca is set
    )
    try:
        uvicorn.Server(config).run()
    except ModelLoadError as exc:
        raise ServeError(str(exc)) from None
    finally:
        pool.stop_children()  # after a drain they are stopped already; after a failure, now
