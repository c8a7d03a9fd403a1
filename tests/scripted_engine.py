"""An in-process engine that answers from a script and fails on cue, for the fault tests.

It stands where `LlamaCppEngine` stands behind `LocalBackend`: the pool, the API and the
governance above it run for real. Its faults are plain exceptions raised where a real engine's
code could raise them (submitting, counting tokens, mid-stream), not httpx or engine errors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from sovllm.engines.base import EngineStats, GenerationOutput, GenerationRequest, ModelInfo, Timings

MODEL = "m"


class ScriptedStream:
    def __init__(
        self, request_id: str, texts: Sequence[str], fault: Exception | None, fault_at: int
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = 3
        self.cancelled = False
        self._texts, self._fault, self._fault_at = texts, fault, fault_at

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        now = time.perf_counter()
        for i, text in enumerate(self._texts):
            if self._fault is not None and i == self._fault_at:
                raise self._fault
            yield GenerationOutput(text, (i + 1,), 3, i + 1, time=now)
        if self._fault is not None:
            raise self._fault
        n = len(self._texts)
        yield GenerationOutput("", (), 3, n, "stop", Timings(now, now, now, now), time=now)

    def cancel(self) -> None:
        self.cancelled = True


class ScriptedEngine:
    """Answers `texts` one output each, then stops. `fault` is raised by `submit()`
    (`fault_at` None), or by the stream before its output number `fault_at` (0: before the
    first token; past the texts: instead of the final output)."""

    served_name = MODEL

    def __init__(
        self, texts: Sequence[str] = ("Hello", " there"), fault: Exception | None = None,
        fault_at: int | None = None, count_fault: Exception | None = None,
    ) -> None:  # fmt: skip
        self.model = ModelInfo(MODEL, "-", "0" * 64, 4096, 0)
        self.healthy = True
        self.texts, self.fault, self.fault_at, self.count_fault = (
            texts,
            fault,
            fault_at,
            count_fault,
        )
        self.submitted = 0

    def submit(self, request: GenerationRequest) -> ScriptedStream:
        self.submitted += 1
        if self.fault is not None and self.fault_at is None:
            raise self.fault
        return ScriptedStream(request.request_id, self.texts, self.fault, self.fault_at or 0)

    def count_tokens(self, request: GenerationRequest) -> int:
        if self.count_fault is not None:
            raise self.count_fault
        return 3

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 1, 1)

    def start(self) -> None:
        return None

    def shutdown(self) -> None:
        return None
