"""One request's tokens and state inside the engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from sovllm.engines.base import FinishReason, GenerationOutput, SamplingParams, Timings
from sovllm.engines.llamacpp.text import StopMatcher, Utf8Stream


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no slot yet
    PREFILL = "prefill"  # has a slot, prompt partly in the KV cache
    DECODE = "decode"  # prompt done, one token per step
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    arrival: float = field(default_factory=time.perf_counter)
    status: Status = Status.WAITING
    slot: int | None = None
    n_computed: int = 0
    """Tokens of this sequence already in its KV cache."""
    output: list[int] = field(default_factory=list)
    cancelled: bool = False
    scheduled_at: float | None = None
    first_token_at: float | None = None
    finish_reason: FinishReason | None = None
    sampler: object | None = None
    """The runner's sampler for this sequence (a llama.cpp sampler chain)."""
    flow: str = ""
    weight: float = 1.0
    finish_tag: float = 0.0
    """Virtual finish time in the fair queue (smaller is served first)."""
    swapped: bytes | None = None
    """The KV cache of a preempted sequence, while it waits to resume."""
    resume_as: Status | None = None
    cached_tokens: int = 0
    """Prompt tokens reused from the prefix cache at admission."""
    owner: str = ""
    """Whose request this is (the tenant), whatever fair sharing does with `flow`."""
    _utf8: Utf8Stream = field(default_factory=Utf8Stream)
    _stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self._stops = StopMatcher(self.sampling.stop)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def remaining_prompt(self) -> int:
        return max(self.prompt_len - self.n_computed, 0)

    def next_prompt_chunk(self, budget: int) -> list[int]:
        return self.prompt[self.n_computed : self.n_computed + budget]

    @property
    def cost(self) -> int:
        """Tokens this request may use: its fair-queue cost, as for the quota reservation."""
        return self.prompt_len + self.max_tokens

    @property
    def last_token(self) -> int:
        return self.output[-1]

    def timings(self, now: float | None = None) -> Timings:
        return Timings(
            arrival=self.arrival,
            scheduled=self.scheduled_at,
            first_token=self.first_token_at,
            finished=now,
        )

    def append_token(self, token: int, piece: bytes, is_eog: bool, now: float) -> GenerationOutput:
        """Record a sampled token and say what the client should see of it."""
        if self.first_token_at is None:
            self.first_token_at = now
        reason: FinishReason | None = None
        kept = not (is_eog and not self.sampling.ignore_eos)
        if not kept:
            # The end-of-generation token is not part of the answer.
            text = ""
            reason = "stop"
        else:
            self.output.append(token)
            text = self._stops.push(self._utf8.push(piece))
            if self._stops.stopped:
                reason = "stop"
            elif len(self.output) >= self.max_tokens:
                reason = "length"
        if reason is not None:
            text += self._stops.push(self._utf8.flush()) + self._stops.flush()
            self.finish(reason)
        return GenerationOutput(
            text=text,
            token_ids=(token,) if kept else (),
            prompt_tokens=self.prompt_len,
            completion_tokens=len(self.output),
            finish_reason=reason,
            timings=self.timings(now) if reason else None,
            time=now,
            cached_tokens=self.cached_tokens,
        )

    def finish(self, reason: FinishReason) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason

    def final_output(
        self, reason: FinishReason, now: float, error: str | None = None
    ) -> GenerationOutput:
        """The last output of a sequence ended from outside (cancelled, failed, shut down)."""
        self.finish(reason)
        return GenerationOutput(
            text="",
            token_ids=(),
            prompt_tokens=self.prompt_len,
            completion_tokens=len(self.output),
            finish_reason=reason,
            timings=self.timings(now),
            error=error,
            time=now,
            cached_tokens=self.cached_tokens,
        )
