"""The replica pool's settings: which replicas serve, and how requests are routed to them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RoutingPolicy = Literal["round_robin", "least_outstanding", "prefix_affinity"]


class DiscoverySettings(BaseModel):
    """A replica group whose members are the addresses a DNS name resolves to (a Kubernetes
    headless Service: one per ready pod), followed while the gateway runs."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dns"] = Field("dns", description="How members are found: dns (A records).")
    name: str = Field(
        ...,
        min_length=1,
        pattern=r"^[A-Za-z0-9.-]+$",
        description="The name to resolve, e.g. vllm-llama70b.sovllm.svc.cluster.local.",
    )
    port: int = Field(..., ge=1, le=65535, description="The port every member serves on.")
    interval_s: float = Field(5.0, gt=0, le=3600, description="How often the name is resolved.")
    nameserver: str | None = Field(
        None,
        pattern=r"^[^:]+:[0-9]{1,5}$",
        description="host:port of a DNS server asked directly (default: the system resolver).",
    )

    @field_validator("nameserver")
    @classmethod
    def _port_in_range(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
            raise ValueError("the nameserver's port must be 1-65535")
        return value


class ReplicaSettings(BaseModel):
    """One replica, or `count` identical ones. The kind says what serves behind it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["embedded", "vllm", "openai"]
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="Shown in metrics and logs."
    )
    count: int = Field(1, ge=1, le=64, description="Identical replicas started from this entry.")
    url: str | None = Field(
        None,
        description="Base URL of a running server (openai: required; vllm, embedded: attach "
        "to it instead of starting one), e.g. http://127.0.0.1:8100/v1.",
    )
    discovery: DiscoverySettings | None = Field(
        None,
        description="Instead of 'url': the running servers a DNS name resolves to, joining "
        "and leaving as it changes (vllm, openai, or attached sovllm workers).",
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Port of a started child (default: a free one)."
    )
    model: str | None = Field(
        None,
        description="embedded: a catalog name or GGUF path (default: the top-level model); "
        "vllm: the model vLLM loads; openai: the upstream's model id.",
    )
    served_model_name: str | None = Field(
        None, description="The id clients use (default: the model's)."
    )
    api_key_env: str | None = Field(
        None,
        description="Environment variable that holds the upstream's API key (an attached "
        "sovllm worker: its SOVLLM_WORKER_TOKEN).",
    )
    max_outstanding: int | None = Field(
        None,
        ge=1,
        description="Requests this gateway may have in flight on the replica; past it, the "
        "replica counts as full (an upstream's own queue is not visible to the gateway).",
    )
    tokenizer: str | None = Field(
        None,
        description="A GGUF file whose vocabulary counts this upstream's tokens exactly; "
        "without one, prompts are estimated at 4 characters a token for admission.",
    )
    weights_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The SHA-256 of the weights this replica serves (a file's, or a folder's as "
        "`sovllm models approve` computes it): how a replica sovllm does not start is checked "
        "against the model allow-list (models.allow_list); a started one is hashed instead.",
    )
    # vLLM's own flags, by their names.
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    enable_prefix_caching: bool = True
    extra_args: list[str] = Field(default_factory=list, description="More vLLM flags.")
    executable: str = Field("vllm", description="The vLLM command.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of a started replica, over what sovllm sets (e.g. "
        "VLLM_CPU_OMP_THREADS_BIND: on a CPU, replicas on one machine each need their own "
        "cores, as on GPUs each gets its own devices).",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not an environment variable name")
        return env

    @model_validator(mode="after")
    def _coherent(self) -> ReplicaSettings:
        if self.env and (self.kind == "openai" or self.url is not None or self.discovery):
            raise ValueError("'env' applies to a replica sovllm starts, not to one it attaches to")
        if self.discovery is not None:
            self._discovered()
        if self.kind == "openai" and self.url is None and self.discovery is None:
            raise ValueError("an openai replica needs 'url' (or 'discovery')")
        if self.kind == "openai" and self.model is None:
            raise ValueError("an openai replica needs 'model' (the upstream's model id)")
        if self.kind == "vllm" and self.model is None and self.url is None:
            raise ValueError("a vllm replica needs 'model' (or 'url' to attach to one)")
        if self.url is not None and self.count != 1:
            raise ValueError("'count' applies to started replicas, not to one 'url'")
        if self.port is not None and self.count != 1:
            raise ValueError("'port' names one replica's port: use count 1 per port")
        return self

    def _discovered(self) -> None:
        """A discovered group attaches to servers someone else runs: sovllm starts none."""
        if self.url is not None:
            raise ValueError("'url' and 'discovery' exclude each other: a replica is one or other")
        if "count" in self.model_fields_set:
            raise ValueError("'count' applies to started replicas; 'discovery' finds its own")
        if self.port is not None:
            raise ValueError("'port' applies to a started replica; use 'discovery.port'")
        if self.kind == "vllm" and self.model is None:
            raise ValueError("a discovered vllm replica needs 'model' (the model vLLM serves)")


class RoutingSettings(BaseModel):
    """How the gateway picks a replica, and how it decides one is down."""

    model_config = ConfigDict(extra="forbid")

    policy: RoutingPolicy = Field(
        "least_outstanding", description="round_robin, least_outstanding or prefix_affinity."
    )
    affinity_key: Literal["auto", "prefix", "user", "session"] = Field(
        "auto",
        description="prefix_affinity's key: the x-session-id header, the `user` field, the "
        "conversation's first messages, or (auto) the first of those present.",
    )
    load_bound: float = Field(
        1.25,
        ge=1.0,
        description="prefix_affinity sends a key elsewhere when its replica has more than "
        "this times the mean outstanding requests (+1): a hot key cannot overload one.",
    )
    probe_interval_s: float = Field(0.5, gt=0, le=60, description="Active health probe period.")
    probe_timeout_s: float = Field(1.0, gt=0, le=60)
    busy_probe_grace_s: float = Field(
        30.0,
        gt=0,
        description="A replica with requests in flight whose probe times out stays in the pool "
        "while it sent something (an output, or took a request) in this many seconds: a server "
        "that answers one request at a time (llama.cpp's) queues its probe behind its work, "
        "even before a first token.",
    )
    failure_threshold: int = Field(
        2, ge=1, description="Consecutive failures (probes or requests) that open the breaker."
    )
    connect_timeout_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(
        3, ge=1, description="Replicas a request tries before its first token, at most."
    )
    queue_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A request with no first token after this long is dropped (a queued one "
        "before it costs compute); a request may ask for less with x-sovllm-queue-timeout.",
    )
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A streaming request whose replica sends nothing for this long after its "
        "first output ends as a replica failure (a replica that hangs without closing).",
    )
    start_timeout_s: float = Field(
        300.0, gt=0, description="How long a started replica may take to become healthy."
    )
