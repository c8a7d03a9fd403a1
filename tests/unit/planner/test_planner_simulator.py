from __future__ import annotations

import time

import pytest

from sovllm.planner.perf import StepWork
from sovllm.planner.simulator import SchedulerConfig, simulate
from sovllm.planner.workload import Lengths, Load, ThinkTime


class FixedStep:
    """Every step takes `dt`, whatever it holds: makes latencies countable by hand."""

    def __init__(self, dt: float = 0.01) -> None:
        self.dt = dt

    def step_time(self, work: StepWork) -> float:
        return self.dt


class LinearStep:
    """A step costs a base plus a per-token part, like a real engine."""

    def step_time(self, work: StepWork) -> float:
        return 0.01 + 0.0002 * work.decode_seqs + 0.00005 * work.prefill_tokens


BIG = SchedulerConfig(max_num_seqs=256, max_num_batched_tokens=2048, kv_token_capacity=10**7)


def test_single_sequence_latencies_follow_the_step_count() -> None:
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, kv_token_capacity=10**6)
    res = simulate(
        FixedStep(0.01),
        cfg,
        Load("concurrency", 1),
        Lengths(1000, 1000),
        Lengths(50, 50),
        requests=5,
    )
    # 1000 prompt tokens in 256-token chunks: 4 steps to the first token, then one per token.
    assert res.ttft.mean == pytest.approx(0.04)
    assert res.tpot.mean == pytest.approx(0.01)
    assert res.e2e.mean == pytest.approx(0.04 + 49 * 0.01)
    assert res.output_tokens_per_s == pytest.approx(50 / res.e2e.mean, rel=1e-6)


def test_percentiles_are_ordered_and_seeded_runs_repeat() -> None:
    args = (LinearStep(), BIG, Load("rate", 20.0), Lengths(100, 900), Lengths(50, 300))
    a = simulate(*args, requests=300, seed=1)
    b = simulate(*args, requests=300, seed=1)
    assert a == b
    assert a.ttft.p50 <= a.ttft.p95 <= a.ttft.p99
    assert a.tpot.p50 <= a.tpot.p95


def test_throughput_grows_with_concurrency_then_saturates() -> None:
    thr = [
        simulate(
            LinearStep(), BIG, Load("concurrency", c), Lengths(200, 200), Lengths(100, 100)
        ).output_tokens_per_s
        for c in (1, 8, 64)
    ]
    assert thr[0] < thr[1] < thr[2]
    offline = simulate(
        LinearStep(), BIG, Load("offline"), Lengths(200, 200), Lengths(100, 100), requests=600
    )
    assert offline.output_tokens_per_s >= thr[2] * 0.9


def test_kv_shortage_queues_requests_and_raises_ttft() -> None:
    small = SchedulerConfig(
        max_num_seqs=256, max_num_batched_tokens=2048, kv_token_capacity=4 * 320
    )
    roomy = simulate(
        LinearStep(), BIG, Load("concurrency", 16), Lengths(200, 200), Lengths(100, 100)
    )
    tight = simulate(
        LinearStep(), small, Load("concurrency", 16), Lengths(200, 200), Lengths(100, 100)
    )
    assert tight.peak_running <= 4 and tight.peak_waiting > 0
    assert tight.ttft.mean > 3 * roomy.ttft.mean


def test_poisson_overload_makes_ttft_grow() -> None:
    light = simulate(
        LinearStep(), BIG, Load("rate", 1.0), Lengths(500, 500), Lengths(100, 100), requests=200
    )
    heavy = simulate(
        LinearStep(), BIG, Load("rate", 200.0), Lengths(500, 500), Lengths(100, 100), requests=400
    )
    assert heavy.ttft.p95 > 10 * light.ttft.p95


def test_closed_loop_users_obey_littles_law() -> None:
    users, think = 40, 5.0
    res = simulate(
        LinearStep(),
        BIG,
        Load("users", users, ThinkTime.exponential(think)),
        Lengths(300, 500),
        Lengths(100, 100),
    )
    assert res.requests_per_s == pytest.approx(users / (think + res.e2e.mean), rel=1e-6)
    # Fewer requests are in flight than there are users, because most of them are thinking.
    assert res.peak_running < users


def test_request_longer_than_the_whole_kv_cache_is_rejected_not_hung() -> None:
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=512, kv_token_capacity=256)
    res = simulate(
        FixedStep(), cfg, Load("offline"), Lengths(1000, 1000), Lengths(10, 10), requests=3
    )
    assert res.rejected == 3 and res.notes


def test_a_thousand_requests_simulate_quickly() -> None:
    start = time.perf_counter()
    simulate(
        LinearStep(),
        BIG,
        Load("users", 200, ThinkTime.exponential(10.0)),
        Lengths(300, 500),
        Lengths(100, 300),
        requests=1000,
    )
    assert time.perf_counter() - start < 2.0


def test_prompts_admitted_but_not_yet_prefilled_count_as_waiting() -> None:
    # vLLM's meaning: a request is running once it has been given tokens. 50 prompts of 1,000
    # tokens arrive at once; the 2,048-token budget prefills two per step, the rest wait.
    res = simulate(
        FixedStep(0.01), BIG, Load("offline"), Lengths(1000, 1000), Lengths(10, 10), requests=50
    )
    assert res.peak_waiting >= 47
    # Running: the prompts being prefilled (two or three a step) and those decoding their 10
    # tokens, never the 50 that were admitted at once.
    assert 3 <= res.peak_running < 30


def test_a_cached_prefix_is_not_prefilled_but_holds_its_blocks() -> None:
    # 1,000-token prompts, 80% in the prefix cache: 200 tokens of prefill each, one step's
    # worth at a 256-token budget, where a cold prompt needs four.
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, kv_token_capacity=10**6)
    args = (FixedStep(0.01), cfg, Load("concurrency", 1), Lengths(1000, 1000), Lengths(10, 10))
    cold = simulate(*args, requests=5)
    warm = simulate(*args, requests=5, cached_fraction=0.8)
    assert cold.ttft.mean == pytest.approx(0.04)
    assert warm.ttft.mean == pytest.approx(0.01)
    # The last prompt token is always computed, even if a caller claims the whole prompt.
    assert simulate(*args, requests=5, cached_fraction=1.0).ttft.mean == pytest.approx(0.01)
    # KV for two sequences of 1,010 tokens: cached or not, only two run at once.
    tight = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, kv_token_capacity=2048)
    shape = (FixedStep(0.01), tight, Load("offline"), Lengths(1000, 1000), Lengths(10, 10))
    assert simulate(*shape, requests=6).peak_running == 2
    assert simulate(*shape, requests=6, cached_fraction=0.8).peak_running == 2


class RecordingStep(FixedStep):
    def __init__(self) -> None:
        super().__init__(0.01)
        self.work: list[StepWork] = []

    def step_time(self, work: StepWork) -> float:
        self.work.append(StepWork(**vars(work)))
        return self.dt


def test_a_cached_prefix_is_attended_and_read() -> None:
    step = RecordingStep()
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, kv_token_capacity=10**6)
    simulate(
        step,
        cfg,
        Load("concurrency", 1),
        Lengths(1000, 1000),
        Lengths(2, 2),
        requests=1,
        cached_fraction=0.8,
    )
    prefill = next(w for w in step.work if w.prefill_tokens)
    assert prefill.prefill_tokens == 200
    assert prefill.prefill_attn == pytest.approx(200 * (800 + 100))
    assert prefill.prefill_ctx == 800


def test_a_cached_prompt_without_a_chunk_is_still_waiting() -> None:
    # A 4-token budget: four decoding sequences use it all, and the fifth prompt, half of it
    # cached, gets no chunk; as vLLM counts, it waits, so at most four run at once.
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=4, kv_token_capacity=10**6)
    res = simulate(
        FixedStep(0.01),
        cfg,
        Load("offline"),
        Lengths(8, 8),
        Lengths(100, 100),
        requests=8,
        cached_fraction=0.5,
    )
    assert res.peak_running == 4
