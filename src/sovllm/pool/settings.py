"""The replica pool's settings: which replicas serve, and how requests are routed to them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RoutingPolicy = Literal["round_robin", "least_outstanding", "prefix_affinity"]


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
    # vLLM's own flags, by their names.
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    enable_prefix_caching: bool = True
    extra_args: list[str] = Field(default_factory=list, description="More vLLM flags.")
    executable: str = Field("vllm", description="The vLLM command.")

    @model_validator(mode="after")
    def _coherent(self) -> ReplicaSettings:
        if self.kind == "openai" and self.url is None:
            raise ValueError("an openai replica needs 'url'")
        if self.kind == "openai" and self.model is None:
            raise ValueError("an openai replica needs 'model' (the upstream's model id)")
        if self.kind == "vllm" and self.model is None and self.url is None:
            raise ValueError("a vllm replica needs 'model' (or 'url' to attach to one)")
        if self.url is not None and self.count != 1:
            raise ValueError("'count' applies to started replicas, not to one 'url'")
        if self.port is not None and self.count != 1:
            raise ValueError("'port' names one replica's port: use count 1 per port")
        return self


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
