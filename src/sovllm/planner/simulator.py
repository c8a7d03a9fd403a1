"""Discrete-event simulation of a continuous-batching scheduler (vLLM-style).

One event is one engine step: running sequences decode one token each, and waiting prompts are
prefilled in chunks within a token budget (chunked prefill). A request is admitted when a slot
(max_num_seqs) and KV blocks for its prompt plus output are free, FIFO; otherwise it queues.
While the batch only decodes and nothing can change it (no arrival that could be admitted, no
completion), steps are fast-forwarded in one event; this keeps the cost per request, not per
token.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field

from sovllm.planner.perf import StepModel, StepWork
from sovllm.planner.workload import Lengths, Load

BLOCK_TOKENS = 16
MAX_EVENTS = 2_000_000


class SimulationError(Exception):
    pass


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_token_capacity: int
    request_overhead_s: float = 0.0


class _Req:
    __slots__ = (
        "arrival",
        "blocks",
        "cached",
        "client",
        "finish",
        "first",
        "generated",
        "index",
        "output",
        "prefilled",
        "prompt",
    )

    def __init__(
        self, index: int, client: int, arrival: float, prompt: int, output: int, cached: int = 0
    ) -> None:
        self.index = index
        self.client = client
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        # Prompt tokens found in the prefix cache: already "prefilled", but held in KV blocks.
        self.cached = cached
        self.prefilled = cached
        self.generated = 0
        self.first = -1.0
        self.finish = -1.0
        self.blocks = math.ceil((prompt + output) / BLOCK_TOKENS)


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        v = sorted(values)
        mean = sum(v) / len(v) if v else 0.0
        return cls(mean, _pct(v, 0.5), _pct(v, 0.95), _pct(v, 0.99))


@dataclass(frozen=True)
class SimResult:
    ttft: Stats
    tpot: Stats
    e2e: Stats
    output_tokens_per_s: float
    requests_per_s: float
    completed: int
    measured: int
    mean_batch: float
    peak_running: int
    peak_waiting: int
    sim_seconds: float
    rejected: int = 0
    notes: list[str] = field(default_factory=list)
    output_tokens: int = 0  # generated in the whole run, warm-up included


def default_requests(load: Load, cap: int) -> int:
    if load.kind == "offline":
        return min(max(3 * cap, 200), 4000)
    if load.kind == "trace":
        return len(load.arrivals)
    # Closed loops start in lock-step; several cycles wash that transient out.
    if load.kind == "concurrency":
        return int(load.value) + max(8 * int(load.value), 400)
    if load.kind == "users":
        return int(load.value) + max(4 * int(load.value), 300)
    return 400


def simulate(
    step: StepModel,
    cfg: SchedulerConfig,
    load: Load,
    prompt: Lengths,
    output: Lengths,
    requests: int | None = None,
    seed: int = 0,
    cached_fraction: float = 0.0,
    first_index: int = 0,
    index_stride: int = 1,
) -> SimResult:
    """`cached_fraction`: the share of each prompt already in the prefix cache (a chat's
    earlier turns). Those tokens cost no prefill, but still attend and hold KV blocks; the last
    prompt token is always computed, as vLLM does.

    Request k takes the lengths of index `first_index + k * index_stride` of a lengths file,
    so that replicas sharing one offline batch each take their own lines of it.

    Offline throughput is the batch's output tokens over its makespan (all queued at 0, the last
    one finished): a finite batch waits for its longest answers."""
    rng = random.Random(seed)
    cap_seqs = max(1, min(cfg.max_num_seqs, cfg.kv_token_capacity // max(1, int(prompt.mean))))
    total = requests if requests is not None else default_requests(load, cap_seqs)
    total_blocks = cfg.kv_token_capacity // BLOCK_TOKENS
    if load.kind in ("concurrency", "users"):
        clients = int(load.value)
        warm = min(clients, total // 3)
    elif load.kind == "rate":
        clients = 0
        warm = total // 10
    else:
        clients = 0
        warm = 0

    arrivals: list[tuple[float, int, _Req]] = []
    reqs: list[_Req] = []

    def new_request(client: int, at: float) -> None:
        k = first_index + len(reqs) * index_stride
        n = prompt.sample(rng, k)
        cached = max(0, min(int(n * cached_fraction), n - 1))
        r = _Req(len(reqs), client, at, n, output.sample(rng, k), cached)
        reqs.append(r)
        heapq.heappush(arrivals, (at + cfg.request_overhead_s, r.index, r))

    if load.kind == "offline":
        for _ in range(total):
            new_request(0, 0.0)
    elif load.kind == "rate":
        at = 0.0
        for _ in range(total):
            at += rng.expovariate(load.value)
            new_request(0, at)
    elif load.kind == "trace":
        for at in load.arrivals[:total]:
            new_request(0, at)
    elif load.kind == "concurrency":
        for c in range(min(clients, total)):
            new_request(c, 0.0)
    else:
        think = load.think_time_s
        for c in range(min(clients, total)):
            # Users start spread over one think time, as a population already in session.
            new_request(c, rng.uniform(0.0, think) if think > 0 else 0.0)

    waiting: deque[_Req] = deque()
    prefilling: deque[_Req] = deque()
    # Every decoding sequence advances one token per step, so one step counter serves them all:
    # a sequence finishes at a known step, kept in a heap (O(log n) per event, not O(batch)).
    decoding: list[tuple[int, int, _Req]] = []
    step_no = 0
    free_blocks = total_blocks
    t = 0.0
    cum_tokens = 0
    # (time, tokens so far) when the measurement window opens and closes.
    window_start: tuple[float, int] | None = (0.0, 0) if warm == 0 else None
    window_end: tuple[float, int] | None = None
    batch_sum = 0.0
    steps = 0
    peak_running = 0
    peak_waiting = 0
    rejected = 0
    decode_ctx = 0.0
    events = 0

    def mark_created() -> None:
        nonlocal window_start, window_end
        n = len(reqs)
        if window_start is None and n > warm:
            window_start = (t, cum_tokens)
        if window_end is None and n >= total and load.kind != "offline":
            window_end = (t, cum_tokens)

    def on_finish(r: _Req) -> None:
        nonlocal free_blocks
        r.finish = t
        r.generated = r.output
        free_blocks += r.blocks
        if load.kind in ("concurrency", "users") and len(reqs) < total:
            gap = rng.expovariate(1.0 / load.think_time_s) if load.think_time_s > 0 else 0.0
            new_request(r.client, t + gap)
            mark_created()

    def finish_due() -> None:
        nonlocal decode_ctx
        while decoding and decoding[0][0] <= step_no:
            r = heapq.heappop(decoding)[2]
            decode_ctx -= r.prompt + r.output
            on_finish(r)

    if load.kind in ("offline", "rate", "trace"):
        mark_created()

    while True:
        events += 1
        if events > MAX_EVENTS:
            raise SimulationError("simulation did not converge (too many events)")
        while arrivals and arrivals[0][0] <= t:
            waiting.append(heapq.heappop(arrivals)[2])
        running = len(prefilling) + len(decoding)
        while waiting and running < cfg.max_num_seqs:
            head = waiting[0]
            if head.blocks > total_blocks:
                waiting.popleft()
                rejected += 1
                head.finish = -2.0
                continue
            if head.blocks > free_blocks:
                break
            waiting.popleft()
            free_blocks -= head.blocks
            prefilling.append(head)
            running += 1
        if running == 0:
            if arrivals:
                t = max(t, arrivals[0][0])
                continue
            break

        d = len(decoding)
        budget = cfg.max_num_batched_tokens - d
        chunks: list[tuple[_Req, int]] = []
        for r in prefilling:
            if budget <= 0:
                break
            c = min(r.prompt - r.prefilled, budget)
            chunks.append((r, c))
            budget -= c
        # As vLLM counts them: an admitted prompt that gets no chunk this step and has had none
        # is still waiting. Chunks go to prompts in order, so only the head can be partly done.
        idle = len(prefilling) - len(chunks)
        if not chunks and prefilling and prefilling[0].prefilled > prefilling[0].cached:
            idle -= 1
        peak_running = max(peak_running, running - idle)
        peak_waiting = max(peak_waiting, len(waiting) + idle)

        if not chunks:
            # Decode-only: fast-forward to the next completion or admissible arrival.
            k = decoding[0][0] - step_no
            work = StepWork(decode_seqs=d, decode_ctx=decode_ctx)
            can_admit = running < cfg.max_num_seqs and free_blocks > 0
            if arrivals and can_admit:
                dt0 = step.step_time(work)
                k_arr = max(1, math.ceil((arrivals[0][0] - t) / dt0))
                k = min(k, k_arr)
            work.decode_ctx = decode_ctx + d * (k - 1) / 2
            dt = step.step_time(work)
            t += k * dt
            step_no += k
            cum_tokens += k * d
            decode_ctx += k * d
            batch_sum += k * d
            steps += k
            finish_due()
            continue

        attn = sum(c * (r.prefilled + c / 2) for r, c in chunks)
        ctx = sum(r.prefilled for r, _ in chunks)  # earlier chunks and cached prefixes
        work = StepWork(d, decode_ctx, sum(c for _, c in chunks), len(chunks), attn, ctx)
        dt = step.step_time(work)
        t += dt
        steps += 1
        step_no += 1
        batch_sum += d + len(chunks)
        cum_tokens += d
        decode_ctx += d
        finish_due()
        for r, c in chunks:
            r.prefilled += c
            if r.prefilled >= r.prompt:
                # Chunks are taken from the front in order, so finished prompts are a prefix.
                prefilling.popleft()
                if r.output == 0:
                    on_finish(r)  # a request answered with no token: it has no first token
                    continue
                r.first = t
                r.generated = 1
                cum_tokens += 1
                if r.output == 1:
                    on_finish(r)
                else:
                    heapq.heappush(decoding, (step_no + r.output - 1, r.index, r))
                    decode_ctx += r.prompt + 1

    if window_start is None:
        window_start = (0.0, 0)
    if window_end is None or window_end[0] <= window_start[0]:
        window_end = (t, cum_tokens)
    measured = [r for r in reqs[warm:] if r.finish >= 0]
    if not measured:
        measured = [r for r in reqs if r.finish >= 0]
    ttft = [r.first - r.arrival for r in measured if r.first >= 0]
    tpot = [(r.finish - r.first) / (r.output - 1) for r in measured if r.output > 1]
    e2e = [r.finish - r.arrival for r in measured]
    mean_out = sum(r.output for r in measured) / len(measured) if measured else 0.0
    if load.kind in ("concurrency", "users") and e2e:
        # Little's law on the closed loop: each client cycles through one request and one think
        # time. It converges far faster than counting tokens in a window of a short run.
        req_rate = clients / (sum(e2e) / len(e2e) + load.think_time_s)
        tok_rate = req_rate * mean_out
    elif load.kind in ("offline", "trace"):
        # A trace is measured whole, as an offline batch is: every recorded request counts.
        tok_rate = cum_tokens / t if t > 0 else 0.0
        req_rate = len(measured) / t if t > 0 else 0.0
    else:
        span = window_end[0] - window_start[0]
        tokens = window_end[1] - window_start[1]
        tok_rate = tokens / span if span > 0 else 0.0
        req_rate = tok_rate / mean_out if mean_out else 0.0
    notes = []
    if load.kind == "rate" and req_rate < 0.95 * load.value:
        notes.append(
            f"overloaded: {load.value:g} req/s offered, {req_rate:.3g} req/s served; the queue "
            "grows without bound, so latencies depend on how long the run is"
        )
    if rejected:
        notes.append(f"{rejected} requests longer than the whole KV cache were rejected")
    return SimResult(
        ttft=Stats.of(ttft),
        tpot=Stats.of(tpot),
        e2e=Stats.of(e2e),
        output_tokens_per_s=tok_rate,
        requests_per_s=req_rate,
        completed=sum(1 for r in reqs if r.finish >= 0),
        measured=len(measured),
        mean_batch=batch_sum / steps if steps else 0.0,
        peak_running=peak_running,
        peak_waiting=peak_waiting,
        sim_seconds=t,
        rejected=rejected,
        notes=notes,
        output_tokens=cum_tokens,
    )
