"""The embedded engine: a thread that drives scheduler and runner, and hands tokens to asyncio.

Requests enter through `submit()` on the event loop, which runs the prompt ids that
`count_tokens()` made for the request (tokenizing only a request not counted, or changed since);
the engine thread batches every running sequence into one llama_decode per step and posts each
step's outputs back to the loop in a single call, where each request's asyncio.Queue receives
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from llama_cpp import __version__ as llama_cpp_version

from sovllm.engines.base import (
    ContextLengthError,
    EngineStats,
    EngineUnavailableError,
    GenerationOutput,
    GenerationRequest,
    InvalidRequestError,
    ModelInfo,
    StepObserver,
)
from sovllm.engines.catalog import ModelSource, weights_sha256
from sovllm.engines.derived import derived_from
from sovllm.engines.llamacpp.chat_template import ChatTemplate
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
from sovllm.engines.llamacpp.native import cpu_backend
from sovllm.engines.llamacpp.runner import DecodeError, Runner
from sovllm.engines.llamacpp.scheduler import Scheduler, Step
from sovllm.engines.llamacpp.sequence import Sequence, Status
from sovllm.engines.llamacpp.settings import EngineSettings
from sovllm.engines.llamacpp.tokenizer import CountedPrompts, request_tokens

log = logging.getLogger("sovllm.engine")


class _Stream:
    """One request's outputs, as an async iterator; `cancel()` frees its slot within a step."""

    def __init__(self, engine: LlamaCppEngine, seq: Sequence) -> None:
        self._engine = engine
        self._seq = seq
        self.request_id = seq.request_id
        self.prompt_tokens = seq.prompt_len
        self.queue: asyncio.Queue[GenerationOutput] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        try:
            while True:
                out = await self.queue.get()
                yield out
                if out.finished:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self._seq.status is not Status.FINISHED and not self._seq.cancelled:
            self._engine._cancel(self._seq)


class LlamaCppEngine:
    """llama.cpp in-process, continuous batching over `slots` sequences with their own KV."""

    def __init__(
        self,
        source: ModelSource,
        settings: EngineSettings,
        served_name: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        self._served_name = served_name or source.name
        self._cache_dir = cache_dir
        self._lock = threading.Condition()
        self._scheduler: Scheduler | None = None
        """Built by start(), once the model says whether its caches can be cut."""
        self._counted = CountedPrompts()
        self._streams: dict[Sequence, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: str | None = None
        self._llm: LlamaModel | None = None
        self._runner: Runner | None = None
        self._template: ChatTemplate | None = None
        self._info: ModelInfo | None = None
        self._steps: StepObserver | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the model (blocking) and start the engine thread."""
        sha = weights_sha256(self._source.path, self._cache_dir)
        settings = self._settings
        shape = ContextShape(
            slots=settings.slots,
            context_per_slot=settings.context_per_slot,
            batch_tokens=settings.batch_tokens,
            threads=settings.threads,
            flash_attn=settings.flash_attn,
            gpu_layers=settings.gpu_layers,
        )
        self._llm = LlamaModel(self._source.path, shape)
        if settings.gpu_layers:
            layers = "every layer" if settings.gpu_layers < 0 else f"{settings.gpu_layers} layers"
            log.info("llama.cpp offloads %s of the model to the GPU", layers)
        self._runner = Runner(self._llm)
        self._scheduler = Scheduler(
            slots=settings.slots,
            step_tokens=settings.batch_tokens,
            max_waiting=settings.max_waiting,
            preempt=settings.fair_share,
            prefix_cache=settings.prefix_cache and self._llm.can_trim,
            exact=settings.deterministic,
        )
        bos = self._llm.token_text(self._llm.bos_token) if self._llm.bos_token >= 0 else ""
        eos = self._llm.token_text(self._llm.eos_token) if self._llm.eos_token >= 0 else ""
        self._template = ChatTemplate(self._llm.chat_template(), bos, eos)
        meta = self._llm.metadata()
        origin = derived_from(self._source.path)
        # AVX-512 and AVX2 kernels round differently: a replay on another variant may differ,
        # so the variant is part of what the audit log's engine_config_sha256 covers.
        backend = cpu_backend()
        variant = backend.variant if backend is not None else "unknown"
        log.info("llama.cpp CPU back-end: %s (%s)", variant, backend.library if backend else "-")
        config = {
            "engine": "llama.cpp",
            "llama_cpp_python": llama_cpp_version,
            "cpu_backend": variant,
            "settings": settings.model_dump(exclude={"threads"}),
        }
        config_sha = hashlib.sha256(
            json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        self._info = ModelInfo(
            id=self._served_name,
            path=str(self._source.path),
            sha256=sha,
            engine_config_sha256=config_sha,
            derived_from_sha256=origin[1] if origin is not None else "",
            context_length=self._llm.context_per_slot,
            created=int(self._source.path.stat().st_mtime),
            metadata={k: v for k, v in meta.items() if k.startswith("general.")},
        )
        self._thread = threading.Thread(target=self._loop, name="sovllm-engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._thread is not None and self._thread.is_alive():
            return  # still finishing a step; the daemon thread dies with the process
        # Idempotent: the app's lifespan shuts down an engine an operator may have stopped.
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def served_name(self) -> str:
        """The id clients use for this engine's model (known before the model loads)."""
        return self._served_name

    @property
    def model(self) -> ModelInfo:
        if self._info is None:
            raise EngineUnavailableError("the model is not loaded")
        return self._info

    @property
    def healthy(self) -> bool:
        alive = self._thread is not None and self._thread.is_alive()
        return alive and self._failure is None and not self._stopping

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise EngineUnavailableError("the model is not loaded")
        return self._scheduler

    def stats(self) -> EngineStats:
        s = self._scheduler
        if s is None:  # not started: nothing runs or waits yet
            return EngineStats(0, 0, self._settings.slots, self._settings.max_waiting)
        return EngineStats(
            running=len(s.running),
            waiting=s.num_waiting,
            slots=s.slots.size,
            max_waiting=s.max_waiting,
            prefix_cache_queries=s.slots.queries,
            prefix_cache_hits=s.slots.hits,
        )

    def observe_steps(self, observer: StepObserver) -> None:
        """Tell `observer` of every step from now on (the gateway's energy meter)."""
        self._steps = observer

    # -- requests ----------------------------------------------------------------------

    def tokenize_request(self, request: GenerationRequest) -> list[int]:
        llm, template = self._llm, self._template
        if llm is None or template is None:
            raise EngineUnavailableError("the model is not loaded")
        return request_tokens(request, template, llm.tokenize, llm.n_vocab)

    def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt's token count; its ids are kept for this request's submit()."""
        ids = self.tokenize_request(request)
        self._counted.put(request, ids)
        return len(ids)

    def submit(self, request: GenerationRequest) -> _Stream:
        if not self.healthy:
            raise EngineUnavailableError(self._failure or "the engine is not running")
        prompt = self._counted.take(request) or self.tokenize_request(request)
        if not prompt:
            raise InvalidRequestError("the prompt is empty", "prompt")
        ctx = self.model.context_length
        asked = request.sampling.max_tokens
        if len(prompt) + (asked or 1) > ctx:
            raise ContextLengthError(len(prompt), asked or 0, ctx)
        max_tokens = asked if asked is not None else ctx - len(prompt)
        seq = Sequence(request.request_id, prompt, request.sampling, max_tokens)
        seq.owner = request.flow
        if self._settings.fair_share:
            seq.flow, seq.weight = request.flow, request.weight
        stream = _Stream(self, seq)
        with self._lock:
            self.scheduler.add(seq)
            self._streams[seq] = stream
            self._lock.notify()
        return stream

    def _cancel(self, seq: Sequence) -> None:
        with self._lock:
            seq.cancelled = True
            self._lock.notify()

    # -- the engine thread -------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self.scheduler.has_work() and not self._stopping:
                        self._lock.wait()
                    if self._stopping:
                        break
                    step = self.scheduler.schedule()
                    aborted = self._finish_cancelled(step)
                self._deliver(aborted)
                if step.items or step.swapped_out:
                    try:
                        self._swap(step)
                        self._deliver(self._run(step))
                    except DecodeError as exc:
                        # llama.cpp refused this batch: fail its requests, keep serving.
                        log.error("%s", exc)
                        self._deliver(self._fail_step(step, str(exc)))
        except Exception as exc:  # the engine must never die silently
            log.exception("engine step failed")
            self._failure = f"the engine failed: {exc}"
        self._fail_all("the server is shutting down" if self._failure is None else self._failure)

    def _swap(self, step: Step) -> None:
        """Move preempted sequences' KV caches out of their slots, move reused caches to
        where their sequences run, cut reused and evicted slots' caches to what their new
        sequences keep, and move resumed ones back in."""
        llm = self._llm
        assert llm is not None
        for seq, slot in step.swapped_out:
            seq.swapped = llm.save_slot(slot)
            llm.clear_slot(slot)
        for i, copies in enumerate(step.copies):
            failed = llm.copy_slots(copies)
            if failed is not None:
                # The slot table already holds every copy as made: a target left out would
                # hold other cells, maybe another tenant's, than the table says. Empty them all
                # (the taken ones among them belong to this step, which fails).
                targets = {target for group in step.copies[i:] for _, target in group}
                for target in targets:
                    llm.clear_slot(target)
                with self._lock:
                    for target in targets:
                        self.scheduler.slots.forget(target)
                raise DecodeError(f"could not copy a KV cache into slot {failed}")
        for slot, keep in step.trims:
            if not llm.trim_slot(slot, keep):
                raise DecodeError(f"could not keep {keep} cached tokens of slot {slot}")
        for seq in step.swapped_in:
            assert seq.slot is not None and seq.swapped is not None
            if not llm.restore_slot(seq.slot, seq.swapped):
                raise DecodeError(f"could not restore the KV cache of {seq.request_id}")
            seq.swapped = None

    def _run(self, step: Step) -> list[tuple[Sequence, GenerationOutput]]:
        runner, llm = self._runner, self._llm
        assert runner is not None and llm is not None
        if not step.items:
            return []
        observer = self._steps
        if observer is not None:
            observer.step_started()
        # Only this thread touches a running sequence's tokens, so sampling needs no lock.
        sampled = runner.run(step.items, by_length=self._settings.deterministic)
        now = time.perf_counter()
        with self._lock:
            self.scheduler.advance(step)
        outputs = []
        for seq, token in sampled:
            out = seq.append_token(token, llm.piece(token), llm.is_eog(token), now)
            outputs.append((seq, out))
        if observer is not None:  # the step's work: its decode and its sampling
            observer.step_finished([(i.seq.request_id, len(i.tokens)) for i in step.items])
        with self._lock:
            for seq, out in outputs:
                if out.finished:
                    self._retire(seq)
        return outputs

    def _fail_step(self, step: Step, message: str) -> list[tuple[Sequence, GenerationOutput]]:
        now = time.perf_counter()
        seqs = list(dict.fromkeys(item.seq for item in step.items))
        with self._lock:
            for seq in seqs:
                self._retire(seq, cache_valid=False)  # the step may have written part of it
        return [(s, s.final_output("error", now, error=message)) for s in seqs]

    def _finish_cancelled(self, step: Step) -> list[tuple[Sequence, GenerationOutput]]:
        now = time.perf_counter()
        out = []
        for seq in step.released:
            self._retire(seq)
            out.append((seq, seq.final_output("abort", now)))
        return out

    def _retire(self, seq: Sequence, cache_valid: bool = True) -> None:
        """Free a finished sequence's slot and sampler (lock held). Its KV cache stays in the
        slot for a later prompt with the same prefix, unless it is not valid."""
        if not cache_valid and seq.slot is not None and self._llm is not None:
            self._llm.clear_slot(seq.slot)
        self.scheduler.release(seq, cache_valid)
        if self._runner is not None:
            self._runner.release(seq)

    def _fail_all(self, message: str) -> None:
        now = time.perf_counter()
        with self._lock:
            seqs = list(self.scheduler.running) + list(self.scheduler.waiting)
            self.scheduler.waiting.clear()
            for seq in seqs:
                self.scheduler.release(seq)
                if self._runner is not None:
                    self._runner.release(seq)
            outs = [(s, s.final_output("error", now, error=message)) for s in seqs]
        self._deliver(outs)

    def _deliver(self, outputs: list[tuple[Sequence, GenerationOutput]]) -> None:
        if not outputs:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, GenerationOutput]]]
        by_loop = defaultdict(list)
        with self._lock:
            for seq, out in outputs:
                stream = self._streams.get(seq)
                if stream is None:
                    continue
                if out.finished:
                    del self._streams[seq]
                by_loop[stream.loop].append((stream, out))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody listens
                loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[_Stream, GenerationOutput]]) -> None:
    for stream, out in items:
        stream.queue.put_nowait(out)
