"""From the settings to a running pool: plan the replicas, check egress, start the children.

`plan()` is pure: it resolves every replica's name, URL, model and command line, and is what
`sovllm serve --dry-run` prints. `start()` runs that plan.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sovllm.config import Settings
from sovllm.engines.base import GenerationRequest, ModelInfo
from sovllm.engines.catalog import ModelNotFoundError, ModelSource, resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.tokenizer import Tokenizer
from sovllm.pool import wire
from sovllm.pool.backends import Backend, LocalBackend, OpenAIBackend, WorkerBackend
from sovllm.pool.children import Child, ChildStartError, stop_all
from sovllm.pool.replica import Replica
from sovllm.pool.router import Pool
from sovllm.pool.settings import ReplicaSettings


class PoolConfigError(Exception):
    """A replica is misconfigured or cannot start; the message names it."""


@dataclass
class ReplicaPlan:
    name: str
    kind: str  # local, embedded, vllm, openai
    url: str
    model_id: str
    model: str
    """What is loaded or asked for: a GGUF path, vLLM's model, or the upstream's model id."""
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    tokenizer: Path | None = None
    api_key_env: str | None = None
    context_length: int = 0
    max_outstanding: int | None = None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(host: str, port: int) -> str | None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def plan(
    settings: Settings, embedded: int | None = None, config_file: Path | None = None
) -> list[ReplicaPlan]:
    """The replicas to run. `embedded` (serve --replicas N) adds N embedded workers."""
    entries = list(settings.replicas)
    if embedded:
        entries.append(ReplicaSettings(kind="embedded", count=embedded))
    if not entries:
        source = _source(settings.model, "model")
        served = settings.served_model_name or source.name
        return [ReplicaPlan("local", "local", "in-process", served, str(source.path))]
    plans: list[ReplicaPlan] = []
    workers = sum(e.count for e in entries if e.kind == "embedded" and e.url is None)
    gpu = 0
    numbered: dict[str, int] = {}
    for entry in entries:
        for n in range(entry.count):
            if entry.name is not None:
                name = entry.name if entry.count == 1 else f"{entry.name}-{n}"
            else:
                base = {"embedded": "worker", "vllm": "vllm", "openai": "upstream"}[entry.kind]
                numbered[base] = numbered.get(base, -1) + 1
                name = f"{base}-{numbered[base]}"
            if entry.kind == "embedded" and entry.url is None:
                plans.append(_embedded(settings, entry, name, workers, config_file))
            elif entry.kind == "embedded":
                plans.append(_attached_worker(settings, entry, name))
            elif entry.kind == "vllm" and entry.url is None:
                plans.append(_vllm(entry, name, gpu))
                gpu += entry.tensor_parallel_size
            else:
                plans.append(_upstream(settings, entry, name))
    names = [p.name for p in plans]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolConfigError(f"invalid setting 'replicas': duplicate replica name {dupes[0]!r}")
    return plans


def _source(model: str, setting: str) -> ModelSource:
    try:
        return resolve_model(model)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"invalid setting '{setting}': {exc}") from None


def _embedded(
    settings: Settings, entry: ReplicaSettings, name: str, workers: int, config: Path | None
) -> ReplicaPlan:
    try:
        source = resolve_model(entry.model or settings.model)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"replica '{name}': {exc}") from None
    host = "127.0.0.1"
    port = entry.port or _free_port(host)
    served = entry.served_model_name or settings.served_model_name or source.name
    argv = [sys.executable, "-m", "sovllm", "worker", "--host", host, "--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    env = {
        "SOVLLM_MODEL": str(source.path),
        "SOVLLM_SERVED_MODEL_NAME": served,
        "SOVLLM_DATA_DIR": str(settings.data_dir),
    }
    if "threads" not in settings.engine.model_fields_set and workers > 1:
        # N workers each spinning cpu_count threads would fight over the cores.
        env["SOVLLM_ENGINE__THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    url = f"http://{host}:{port}"
    return ReplicaPlan(name, "embedded", url, served, str(source.path), argv, env,
                       url + "/health", tokenizer=source.path)  # fmt: skip


def _attached_worker(settings: Settings, entry: ReplicaSettings, name: str) -> ReplicaPlan:
    """A `sovllm worker` someone else started (another host, a container): the pool joins it."""
    assert entry.url is not None
    url = entry.url.rstrip("/")
    check_egress(url, settings.egress_allow, name)
    try:
        source = resolve_model(entry.model or settings.model)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"replica '{name}': {exc}") from None
    served = entry.served_model_name or settings.served_model_name or source.name
    return ReplicaPlan(name, "embedded", url, served, str(source.path), None, {}, url + "/health",
                       source.path, entry.api_key_env, max_outstanding=entry.max_outstanding)  # fmt: skip


def _vllm(entry: ReplicaSettings, name: str, first_gpu: int) -> ReplicaPlan:
    assert entry.model is not None
    host = "127.0.0.1"
    port = entry.port or _free_port(host)
    served = entry.served_model_name or entry.model
    argv = [
        entry.executable, "serve", entry.model, "--host", host, "--port", str(port),
        "--served-model-name", served,
        "--tensor-parallel-size", str(entry.tensor_parallel_size),
        "--gpu-memory-utilization", str(entry.gpu_memory_utilization),
    ]  # fmt: skip
    if entry.max_model_len is not None:
        argv += ["--max-model-len", str(entry.max_model_len)]
    if entry.enable_prefix_caching:
        # ... and report the reused tokens in usage, as the embedded engine does.
        argv += ["--enable-prefix-caching", "--enable-prompt-tokens-details"]
    argv += entry.extra_args
    # Each replica gets its own GPUs: replica i of tensor parallel size T takes the visible
    # GPUs [i*T, (i+1)*T), counted within any CUDA_VISIBLE_DEVICES the gateway was given.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in visible.split(",") if g.strip()] if visible else None
    wanted = range(first_gpu, first_gpu + entry.tensor_parallel_size)
    if ids is not None and wanted.stop > len(ids):
        raise PoolConfigError(
            f"replica '{name}': needs GPUs {wanted.start}-{wanted.stop - 1} of the "
            f"{len(ids)} in CUDA_VISIBLE_DEVICES={visible}"
        )
    gpus = ",".join(ids[g] if ids is not None else str(g) for g in wanted)
    base = f"http://{host}:{port}"
    return ReplicaPlan(
        name, "vllm", base + "/v1", served, entry.model, argv, {"CUDA_VISIBLE_DEVICES": gpus},
        base + "/health", _tokenizer(entry), None, entry.max_model_len or 0,
        entry.max_outstanding,
    )  # fmt: skip


def _upstream(settings: Settings, entry: ReplicaSettings, name: str) -> ReplicaPlan:
    assert entry.url is not None
    url = entry.url.rstrip("/")
    check_egress(url, settings.egress_allow, name)
    upstream = entry.model or ""
    health = None
    if entry.kind == "vllm":
        parts = urlsplit(url)
        health = f"{parts.scheme}://{parts.netloc}/health"
        upstream = entry.served_model_name or entry.model or ""
    served = entry.served_model_name or upstream
    return ReplicaPlan(name, entry.kind, url, served, upstream, None, {}, health,
                       _tokenizer(entry), entry.api_key_env, entry.max_model_len or 0,
                       entry.max_outstanding)  # fmt: skip


def _tokenizer(entry: ReplicaSettings) -> Path | None:
    if entry.tokenizer is None:
        return None
    try:
        return resolve_model(entry.tokenizer).path
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"invalid setting 'tokenizer': {exc}") from None


def check_egress(url: str, allow: list[str], name: str) -> None:
    """Refuse an upstream outside loopback and private networks unless it is allowed."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise PoolConfigError(f"replica '{name}': url {url!r} is not an http(s) URL")
    host = parts.hostname
    if host in allow:
        return
    try:
        infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise PoolConfigError(
            f"replica '{name}': cannot resolve {host!r}: {exc.strerror}"
        ) from None
    networks = []
    for item in allow:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue  # a host name: compared above
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        # Link-local counts as private to Python, but it is where cloud metadata lives.
        if address.is_loopback or (address.is_private and not address.is_link_local):
            continue
        if any(address in net for net in networks):
            continue
        raise PoolConfigError(
            f"replica '{name}': {url} resolves to {address}, outside loopback and private "
            "networks; nothing leaves the machine unless the host or its network is listed in "
            "'egress_allow'"
        )


def describe(plans: list[ReplicaPlan]) -> str:
    """What `sovllm serve --dry-run` prints: each replica, and the command that starts it."""
    lines = []
    for p in plans:
        lines.append(f"{p.name}: {p.kind} replica of '{p.model_id}' at {p.url}")
        if p.argv is not None:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(p.env.items())
                           if k != wire.TOKEN_ENV)  # fmt: skip
            lines.append(f"  $ {env + ' ' if env else ''}{shlex.join(p.argv)}")
    return "\n".join(lines)


# -- running it ----------------------------------------------------------------------------


def start(settings: Settings, plans: list[ReplicaPlan]) -> Pool:
    """Start the children, wait until each answers, and build the pool over all replicas."""
    token = secrets.token_urlsafe(24)
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
        busy = _port_free("127.0.0.1", port)
        if busy is not None:
            raise PoolConfigError(f"replica '{p.name}': cannot listen on 127.0.0.1:{port}: {busy}")
        log_path = settings.data_dir / "logs" / f"replica-{p.name}.log"
        # The gateway's token guards every child: a worker checks it, vLLM too (VLLM_API_KEY).
        secret = {wire.TOKEN_ENV: token} if p.kind == "embedded" else {"VLLM_API_KEY": token}
        children.append(Child(p.name, p.argv, {**p.env, **secret}, p.health_url, log_path))
    try:
        for child in children:
            child.start()
        for child in children:
            child.wait_ready(settings.routing.start_timeout_s)
        return _pool(settings, plans, token, children)
    except ChildStartError as exc:
        stop_all(children, 5)
        raise PoolConfigError(str(exc)) from None
    except BaseException:  # Ctrl-C while waiting, a bad tokenizer file...: no orphans
        stop_all(children, 5)
        raise


def _pool(settings: Settings, plans: list[ReplicaPlan], token: str, children: list[Child]) -> Pool:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=settings.routing.connect_timeout_s),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=1024),
        trust_env=False,  # never a proxy: replicas are reached directly or not at all
    )
    replicas = []
    by_name = {c.name: c for c in children}
    for p in plans:
        backend, count = _backend(settings, p, token, client)
        replica = Replica(p.name, p.kind, p.url, p.model_id, backend, count, settings.routing)
        replica.max_outstanding = p.max_outstanding
        started = by_name.get(p.name)
        if started is not None:
            started.on_exit = replica.child_exited
            replica.child = started
            started.supervise()
        replicas.append(replica)
    grace = settings.shutdown_grace_s
    return Pool(replicas, settings.routing, lambda: stop_all(children, grace))


def in_process(engine: LlamaCppEngine, settings: Settings) -> Pool:
    """A pool of one: the given engine, in this process (what `serve` runs without replicas)."""
    replica = Replica("local", "local", "in-process", engine.served_name, LocalBackend(engine),
                      engine.count_tokens, settings.routing)  # fmt: skip
    return Pool([replica], settings.routing)


def _backend(
    settings: Settings, p: ReplicaPlan, token: str, client: httpx.AsyncClient
) -> tuple[Backend, Callable[[GenerationRequest], int]]:
    if p.kind == "local":
        engine = LlamaCppEngine(resolve_model(p.model), settings.engine, p.model_id,
                                cache_dir=settings.data_dir / "cache")  # fmt: skip
        return LocalBackend(engine), engine.count_tokens
    count = Tokenizer(p.tokenizer).count if p.tokenizer is not None else estimate_tokens
    # A started child holds the gateway's token; an attached server, the one its setting names.
    key = token if p.argv is not None else os.environ.get(p.api_key_env or "") or None
    stall = settings.routing.stall_timeout_s
    if p.kind == "embedded":
        return WorkerBackend(p.url, key, client, stall), count
    info = ModelInfo(id=p.model_id, path=p.url, sha256="", context_length=p.context_length,
                     created=int(time.time()), owned_by=p.kind)  # fmt: skip
    vllm = p.kind == "vllm"
    return OpenAIBackend(p.url, p.model, info, key, client, p.health_url, vllm, stall), count


def estimate_tokens(request: GenerationRequest) -> int:
    """Without the upstream's tokenizer: about 4 characters a token, plus each message's frame."""
    if request.messages is not None:
        text = sum(len(m.content) + len(m.role) for m in request.messages)
        return math.ceil(text / 4) + 4 * len(request.messages) + 2
    if isinstance(request.prompt, str):
        return math.ceil(len(request.prompt) / 4) + 1
    return len(request.prompt or [])
