"""The embedded engine's settings: the `engine:` section of sovllm's configuration.

Here rather than in `sovllm.config`, so the engine depends on nothing above it; the
configuration imports this class.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


class EngineSettings(BaseModel):
    """The embedded llama.cpp engine."""

    model_config = ConfigDict(extra="forbid")

    slots: int = Field(
        32, ge=1, le=256, description="Sequences decoded together; each has its own KV cache."
    )
    context_per_slot: int = Field(
        2048, ge=64, description="Context length (prompt + output tokens) of one slot."
    )
    step_tokens: int = Field(
        512,
        ge=16,
        description="Token budget of one llama_decode step (decode tokens + prefill chunks).",
    )
    max_waiting: int = Field(
        256, ge=0, description="Requests that may wait for a slot; past this the API answers 429."
    )
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for decoding."
    )
    gpu_layers: int = Field(
        0,
        ge=-1,
        description="Model layers llama.cpp offloads to a GPU (-1: all of them, 0: none). Needs "
        "a llama.cpp built with a GPU back-end (CUDA, Metal, ...) pointed at by "
        "LLAMA_CPP_LIB_PATH; `make install`'s build is CPU-only, and there a value other than 0 "
        "stops the start with an error rather than silently running on the CPU.",
    )
    flash_attn: bool = Field(
        True,
        description="Use llama.cpp's flash attention kernels (on by default: 1.17 times the "
        "batched decode at 32 streams on the AVX-512 machine measured, docs/performance.md).",
    )
    fair_share: bool = Field(
        True,
        description="Share the slots between tenants by weight (fair queueing and preemption); "
        "off: first come, first served.",
    )
    prefix_cache: bool = Field(
        True,
        description="Keep finished requests' KV caches in free slots and reuse the longest "
        "common prompt prefix (the earlier turns of a chat) instead of computing it again.",
    )

    deterministic: bool = Field(
        True,
        description="The same greedy (or seeded) answer whatever the batch around a request and "
        "whether its prefix was cached: prompt chunks are never one token long and run apart from "
        "decode tokens, and only the prompt positions of a cached prefix are reused (not an "
        "answer decoded token by token).",
    )

    @property
    def batch_tokens(self) -> int:
        """A step's real budget: every slot's decode token must fit one batch, with two tokens
        to spare for a prompt chunk (deterministic chunks are never one token long)."""
        return max(self.step_tokens, self.slots + 1)
