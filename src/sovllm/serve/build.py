"""From a replica plan (serve/replicas.py) to a running pool: start the children, wait until
each answers, and build the pool over all replicas with a backend each. A discovered group
follows its DNS name (pool/discovery.py) while the pool runs: members join and drain."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import shutil
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from sovllm.config import Settings
from sovllm.engines.base import GenerationRequest, ModelInfo
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.tokenizer import Tokenizer
from sovllm.pool import wire
from sovllm.pool.backends import Backend, LocalBackend, OpenAIBackend, WorkerBackend
from sovllm.pool.children import Child, ChildStartError, stop_all
from sovllm.pool.discovery import Change, DnsDiscovery, DnsTarget
from sovllm.pool.replica import Replica
from sovllm.pool.router import Pool
from sovllm.serve import tls
from sovllm.serve.replicas import PoolConfigError, ReplicaPlan, member, port_free

log = logging.getLogger("sovllm.pool.discovery")


def start(settings: Settings, plans: list[ReplicaPlan]) -> Pool:
    """Start the children, wait until each answers, and build the pool over all replicas."""
    token = secrets.token_urlsafe(24)
    identity = None
    if settings.tls.enabled and any(p.kind == "embedded" and p.argv is not None for p in plans):
        # A certificate of this gateway's own for its workers (serve/tls.py says why).
        name = f"workers-{settings.port or os.getpid()}"
        identity = tls.make_worker_identity(settings.data_dir / "tls", name)
    children: list[Child] = []
    for p in plans:
        if p.argv is None:
            continue
        port = urlsplit(p.url).port
        assert port is not None and p.health_url is not None
        if shutil.which(p.argv[0]) is None:  # checked here: a dry run needs no vLLM
            raise PoolConfigError(
                f"replica '{p.name}': the command {p.argv[0]!r} is not installed or not on PATH"
            )
        busy = port_free("127.0.0.1", port)
        if busy is not None:
            raise PoolConfigError(f"replica '{p.name}': cannot listen on 127.0.0.1:{port}: {busy}")
        log_path = settings.data_dir / "logs" / f"replica-{p.name}.log"
        # The gateway's token guards every child: a worker checks it, vLLM too (VLLM_API_KEY).
        secret = {wire.TOKEN_ENV: token} if p.kind == "embedded" else {"VLLM_API_KEY": token}
        child = Child(p.name, p.argv, {**p.env, **secret}, p.health_url, log_path)
        if identity is not None and p.kind == "embedded":
            child.env.update(identity.env())
            child.verify = identity.client_context()
        children.append(child)
    try:
        for child in children:
            child.start()
        for child in children:
            child.wait_ready(settings.routing.start_timeout_s)
        return _pool(settings, plans, token, children, identity)
    except ChildStartError as exc:
        stop_all(children, 5)
        raise PoolConfigError(str(exc)) from None
    except BaseException:  # Ctrl-C while waiting, a bad tokenizer file...: no orphans
        stop_all(children, 5)
        raise


def _pool(
    settings: Settings,
    plans: list[ReplicaPlan],
    token: str,
    children: list[Child],
    identity: tls.WorkerIdentity | None = None,
) -> Pool:
    def new_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=settings.routing.connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=1024),
            trust_env=False,  # never a proxy: replicas are reached directly or not at all
            verify=verify,
        )

    client = new_client()
    # The workers this gateway started answer with its own certificate, and only it is trusted.
    workers = client if identity is None else new_client(identity.client_context())
    replicas = []
    by_name = {c.name: c for c in children}
    for p in plans:
        if p.discovery is not None:
            continue
        own = p.argv is not None and p.kind == "embedded"
        replica = _replica(settings, p, *_backend(settings, p, token, workers if own else client))
        started = by_name.get(p.name)
        if started is not None:
            started.on_exit = replica.child_exited
            replica.child = started
            started.supervise()
        replicas.append(replica)
    grace = settings.shutdown_grace_s
    pool = Pool(replicas, settings.routing, lambda: stop_all(children, grace))
    for p in plans:
        if p.discovery is not None:
            _follow(settings, pool, p, client)
    return pool


def _replica(
    settings: Settings, p: ReplicaPlan, backend: Backend, count: Callable[[GenerationRequest], int]
) -> Replica:
    replica = Replica(p.name, p.kind, p.url, p.model_id, backend, count, settings.routing)
    replica.max_outstanding = p.max_outstanding
    return replica


def _follow(settings: Settings, pool: Pool, group: ReplicaPlan, client: httpx.AsyncClient) -> None:
    """Follow a discovered group: an address joins once the health probe a replica of the group
    would get passes (and if the egress allow-list lets it: else it is refused and logged
    once), an address that vanishes drains."""
    d = group.discovery
    assert d is not None
    server = None
    if d.nameserver is not None:
        host, port = d.nameserver.rsplit(":", 1)
        server = (host, int(port))
    count = _counter(group)
    refused: set[str] = set()

    def plan_of(address: str) -> ReplicaPlan | None:
        try:
            return member(group, address, settings.egress_allow)
        except PoolConfigError as exc:
            if address not in refused:
                refused.add(address)
                log.warning("discovery: %s refused: %s", address, exc)
            return None

    async def probe(address: str) -> bool:
        p = plan_of(address)
        if p is None:
            return False
        try:
            answer = await asyncio.wait_for(
                _remote(settings, p, "", client).probe(), settings.routing.probe_timeout_s
            )
        except Exception as exc:  # not serving yet: the next round asks again
            log.info("discovery: %s does not answer its probe yet: %r", p.name, exc)
            return False
        if answer.model.id != p.model_id:
            log.warning("discovery: %s serves %r, not %r", p.name, answer.model.id, p.model_id)
            return False
        return True

    async def apply(change: Change) -> None:
        for address in sorted(change.left):
            pool.drain(f"{group.name}-{address}")
        for address in sorted(change.joined):
            p = plan_of(address)
            if p is not None:
                await pool.add(_replica(settings, p, _remote(settings, p, "", client), count))

    found = DnsDiscovery(DnsTarget(d.name, d.port, d.interval_s, server), probe)
    pool.follow(group.model_id, f"DNS name {d.name}", lambda: found.run(apply))


def in_process(engine: LlamaCppEngine, settings: Settings) -> Pool:
    """A pool of one: the given engine, in this process (what `serve` runs without replicas)."""
    backend = LocalBackend(engine)
    replica = Replica(
        "local",
        "local",
        "in-process",
        engine.served_name,
        backend,
        engine.count_tokens,
        settings.routing,
    )
    return Pool([replica], settings.routing)


def _backend(
    settings: Settings, p: ReplicaPlan, token: str, client: httpx.AsyncClient
) -> tuple[Backend, Callable[[GenerationRequest], int]]:
    if p.kind == "local":
        cache = settings.data_dir / "cache"
        engine = LlamaCppEngine(
            settings.resolve_model(p.model), settings.engine, p.model_id, cache_dir=cache
        )
        return LocalBackend(engine), engine.count_tokens
    return _remote(settings, p, token, client), _counter(p)


def _counter(p: ReplicaPlan) -> Callable[[GenerationRequest], int]:
    return Tokenizer(p.tokenizer).count if p.tokenizer is not None else estimate_tokens


def _remote(
    settings: Settings, p: ReplicaPlan, token: str, client: httpx.AsyncClient
) -> WorkerBackend | OpenAIBackend:
    # A started child holds the gateway's token; an attached server, the one its setting names.
    key = token if p.argv is not None else os.environ.get(p.api_key_env or "") or None
    stall = settings.routing.stall_timeout_s
    if p.kind == "embedded":
        return WorkerBackend(p.url, key, client, stall)
    info = ModelInfo(
        id=p.model_id,
        path=p.url,
        sha256=p.weights_sha256,  # known when the model allow-list is on (serve/provenance.py)
        context_length=p.context_length,
        created=int(time.time()),
        owned_by=p.kind,
    )
    vllm = p.kind == "vllm"
    return OpenAIBackend(p.url, p.model, info, key, client, p.health_url, vllm, stall)


def estimate_tokens(request: GenerationRequest) -> int:
    """Without the upstream's tokenizer: about 4 characters a token, plus each message's frame."""
    if request.messages is not None:
        text = sum(len(m.content) + len(m.role) for m in request.messages)
        return math.ceil(text / 4) + 4 * len(request.messages) + 2
    if isinstance(request.prompt, str):
        return math.ceil(len(request.prompt) / 4) + 1
    return len(request.prompt or [])
