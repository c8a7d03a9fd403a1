"""From the settings to the replicas to run: names, URLs, models, command lines, egress.

`plan()` is pure: it resolves every replica's name, URL, model and command line (a derived
model's file is only named; `derive_models` makes it once the data folder is private), and is
what `sovllm serve --dry-run` prints (`describe()`). serve/build.py's `start()` runs that plan. A
discovered group (`discovery`) is one plan, the template of its members (`member()`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sovllm.config import Settings
from sovllm.engines.catalog import CATALOG, ModelNotFoundError, ModelSource, resolve_tokenizer
from sovllm.pool import wire
from sovllm.pool.settings import DiscoverySettings, ReplicaSettings


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
    discovery: DiscoverySettings | None = None
    """A discovered group: its members are the servers this DNS name resolves to."""
    entry: ReplicaSettings | None = None
    """The settings it was planned from (None: the top-level model); serve/provenance.py
    reads the weights to check from it."""
    weights_sha256: str = ""
    """Its weights' hash once the model allow-list check has identified them (a vllm or openai
    replica's answers and audit entries carry it); "" when unchecked."""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(host: str, port: int) -> str | None:
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
        source = _source(settings, settings.model, "model")
        served = settings.served_model_name or source.name
        return [ReplicaPlan("local", "local", "in-process", served, str(source.path))]
    plans: list[ReplicaPlan] = []
    started = [e for e in entries if e.url is None and e.discovery is None]
    workers = sum(e.count for e in started if e.kind == "embedded")
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
            if entry.discovery is not None:
                plans.append(_discovered(settings, entry, name))
            elif entry.kind == "embedded" and entry.url is None:
                plans.append(_embedded(settings, entry, name, workers, config_file))
            elif entry.kind == "embedded":
                plans.append(_attached_worker(settings, entry, name))
            elif entry.kind == "vllm" and entry.url is None:
                plans.append(_vllm(entry, name, gpu))
                gpu += entry.tensor_parallel_size
            else:
                plans.append(_upstream(settings, entry, name))
            plans[-1].entry = entry
    names = [p.name for p in plans]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolConfigError(f"invalid setting 'replicas': duplicate replica name {dupes[0]!r}")
    return plans


def _source(settings: Settings, model: str, setting: str) -> ModelSource:
    try:
        return settings.resolve_model(model, derive=False)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"invalid setting '{setting}': {exc}") from None


def _embedded(
    settings: Settings, entry: ReplicaSettings, name: str, workers: int, config: Path | None
) -> ReplicaPlan:
    try:
        source = settings.resolve_model(entry.model, derive=False)
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
    env.update(entry.env)
    # With tls.* on, the gateway reaches the workers it starts over HTTPS too (serve/tls.py).
    url = f"{'https' if settings.tls.enabled else 'http'}://{host}:{port}"
    return ReplicaPlan(
        name,
        "embedded",
        url,
        served,
        str(source.path),
        argv=argv,
        env=env,
        health_url=url + "/health",
        tokenizer=source.path,
    )


def _attached_worker(settings: Settings, entry: ReplicaSettings, name: str) -> ReplicaPlan:
    """A `sovllm worker` someone else started (another host, a container): the pool joins it."""
    assert entry.url is not None
    url = entry.url.rstrip("/")
    if entry.discovery is None:
        check_egress(url, settings.egress_allow, name)
    try:
        source = settings.resolve_model(entry.model, derive=False)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"replica '{name}': {exc}") from None
    served = entry.served_model_name or settings.served_model_name or source.name
    return ReplicaPlan(
        name,
        "embedded",
        url,
        served,
        str(source.path),
        health_url=url + "/health",
        tokenizer=source.path,
        api_key_env=entry.api_key_env,
        max_outstanding=entry.max_outstanding,
    )


def _discovered(settings: Settings, entry: ReplicaSettings, name: str) -> ReplicaPlan:
    """The template of a discovered group's members: servers someone else runs (vLLM pods, an
    OpenAI-compatible upstream, or sovllm workers), attached to, never started."""
    assert entry.discovery is not None
    found = f"dns://{entry.discovery.name}:{entry.discovery.port}"
    if entry.kind == "embedded":
        attached = _attached_worker(settings, entry.model_copy(update={"url": found}), name)
        return dataclasses.replace(attached, health_url=None, discovery=entry.discovery)
    upstream = entry.model or ""
    if entry.kind == "vllm":
        upstream = entry.served_model_name or upstream
    return ReplicaPlan(
        name,
        entry.kind,
        found,
        entry.served_model_name or upstream,
        upstream,
        tokenizer=_tokenizer(entry),
        api_key_env=entry.api_key_env,
        context_length=entry.max_model_len or 0,
        max_outstanding=entry.max_outstanding,
        discovery=entry.discovery,
    )


def member(group: ReplicaPlan, address: str, allow: list[str]) -> ReplicaPlan:
    """One server of a discovered group, at `address` (host:port), named after both (stable
    while it stays); PoolConfigError if the address is outside the egress allow-list."""
    base = f"http://{address}"
    url = base if group.kind == "embedded" else base + "/v1"
    name = f"{group.name}-{address}"
    check_egress(url, allow, name)
    health = None if group.kind == "openai" else base + "/health"
    return dataclasses.replace(group, name=name, url=url, health_url=health, discovery=None)


def _vllm(entry: ReplicaSettings, name: str, first_gpu: int) -> ReplicaPlan:
    assert entry.model is not None
    host = "127.0.0.1"
    port = entry.port or _free_port(host)
    served = entry.served_model_name or entry.model
    argv = [entry.executable, "serve", entry.model, "--host", host, "--port", str(port)]
    argv += ["--served-model-name", served]
    argv += ["--tensor-parallel-size", str(entry.tensor_parallel_size)]
    argv += ["--gpu-memory-utilization", str(entry.gpu_memory_utilization)]
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
        name,
        "vllm",
        base + "/v1",
        served,
        served,  # what requests ask vLLM for: its --served-model-name, not the weights' path
        argv=argv,
        env={"CUDA_VISIBLE_DEVICES": gpus, **entry.env},
        health_url=base + "/health",
        tokenizer=_tokenizer(entry),
        context_length=entry.max_model_len or 0,
        max_outstanding=entry.max_outstanding,
    )


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
    return ReplicaPlan(
        name,
        entry.kind,
        url,
        served,
        upstream,
        health_url=health,
        tokenizer=_tokenizer(entry),
        api_key_env=entry.api_key_env,
        context_length=entry.max_model_len or 0,
        max_outstanding=entry.max_outstanding,
    )


def _tokenizer(entry: ReplicaSettings) -> Path | None:
    if entry.tokenizer is None:
        return None
    try:
        return resolve_tokenizer(entry.tokenizer)
    except ModelNotFoundError as exc:
        raise PoolConfigError(f"invalid setting 'tokenizer': {exc}") from None


def check_egress(url: str, allow: list[str], name: str, subject: str | None = None) -> None:
    """Refuse an upstream outside loopback and private networks unless it is allowed.

    `subject` names what is refused in the message (default: the replica `name`)."""
    who = subject or f"replica '{name}'"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise PoolConfigError(f"{who}: url {url!r} is not an http(s) URL")
    host = parts.hostname
    if host in allow:
        return
    try:
        infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise PoolConfigError(f"{who}: cannot resolve {host!r}: {exc.strerror}") from None
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
            f"{who}: {url} resolves to {address}, outside loopback and private "
            "networks; nothing leaves the machine unless the host or its network is listed in "
            "'egress_allow'"
        )


def describe(plans: list[ReplicaPlan]) -> str:
    """What `sovllm serve --dry-run` prints: each replica, and the command that starts it."""
    lines = []
    for p in plans:
        if p.discovery is not None:
            d = p.discovery
            server = f", asking {d.nameserver}" if d.nameserver else ""
            lines.append(
                f"{p.name}: {p.kind} replicas of '{p.model_id}' discovered from DNS name "
                f"{d.name} (port {d.port}, every {d.interval_s:g} s{server})"
            )
            continue
        lines.append(f"{p.name}: {p.kind} replica of '{p.model_id}' at {p.url}")
        if p.argv is not None:
            shown = sorted((k, v) for k, v in p.env.items() if k != wire.TOKEN_ENV)
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown)
            lines.append(f"  $ {env + ' ' if env else ''}{shlex.join(p.argv)}")
    return "\n".join(lines)


def derive_models(settings: Settings) -> None:
    """Derive every catalog model the settings serve in another format than it ships in
    (engines/derived.py), before anything hashes or loads the files plan() named."""
    for name in dict.fromkeys([settings.model, *(e.model for e in settings.replicas if e.model)]):
        if name.strip().lower() in CATALOG:
            try:
                settings.resolve_model(name)
            except ModelNotFoundError as exc:
                raise PoolConfigError(f"invalid setting 'model': {exc}") from None
