"""What every engine takes and gives back: typed requests, streamed outputs, and errors.

The API layer speaks only these types: the embedded llama.cpp engine and the pool's backends
(workers, vLLM, any OpenAI-compatible server) take a `GenerationRequest` and give back a
`RequestStream` of `GenerationOutput`s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature 0 means greedy."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Benchmarks force output length the way vLLM does.
    ignore_eos: bool = False
    min_tokens: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    """OpenAI's: subtracted from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted once for each time a token was already generated."""

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """Exactly one of `messages` (chat) and `prompt` (completion: text or token ids) is set."""

    request_id: str
    sampling: SamplingParams
    messages: Sequence[ChatMessage] | None = None
    prompt: str | Sequence[int] | None = None
    flow: str = ""
    """Whose request this is, for fair sharing (the gateway puts the tenant here)."""
    weight: float = 1.0
    """The flow's share of the engine relative to other flows."""


@dataclass(frozen=True)
class Timings:
    """Monotonic seconds (time.perf_counter) of a request's life inside the engine."""

    arrival: float
    scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None


@dataclass(frozen=True)
class GenerationOutput:
    """One step of one request: new text since the last output, and, at the end, why it ended."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    timings: Timings | None = None
    error: str | None = None
    time: float = 0.0
    """When the engine produced this output (time.perf_counter)."""
    cached_tokens: int = 0
    """Prompt tokens whose KV came from the prefix cache instead of being computed."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class ModelInfo:
    id: str
    path: str
    sha256: str
    context_length: int
    """Prompt + completion tokens one request may use."""
    created: int
    owned_by: str = "sovllm"
    metadata: dict[str, str] = field(default_factory=dict)
    engine_config_sha256: str = ""
    """SHA-256 of the engine's configuration and version: what else shapes the output."""
    derived_from_sha256: str = ""
    """SHA-256 of the shipped file these weights were derived from (engines/derived.py)."""


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    slots: int
    max_waiting: int
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the KV prefix cache (a counter, as vLLM's)."""
    prefix_cache_hits: int = 0
    """Of those, tokens reused from the cache instead of computed."""


class StepObserver(Protocol):
    """Told of each engine step, on the engine thread (the energy meter: what a step used is
    shared among its sequences by their tokens). Must be quick and must not raise."""

    def step_started(self) -> None: ...

    def step_finished(self, tokens: Sequence[tuple[str, int]]) -> None:
        """The step ran: (request id, tokens it processed) for each sequence in it."""
        ...


class RequestStream(Protocol):
    """The handle of one submitted request: iterate its outputs, or cancel it."""

    request_id: str
    prompt_tokens: int

    def __aiter__(self) -> AsyncIterator[GenerationOutput]: ...

    def cancel(self) -> None: ...


class EngineError(Exception):
    """Base of what an engine refuses or fails with; the API maps each to a status."""


class InvalidRequestError(EngineError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(InvalidRequestError):
    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens" if max_tokens else "messages",
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class QueueFullError(EngineError):
    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(
            f"The server is at capacity: {waiting} requests are already waiting. "
            f"Retry after {retry_after_s} s."
        )
        self.retry_after_s = retry_after_s


class EngineUnavailableError(EngineError):
    """The engine is not running (not loaded yet, shut down, or failed)."""
