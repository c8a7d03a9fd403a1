"""Metrics computed from hand-made timelines whose answers are known."""

from __future__ import annotations

import math

import pytest

from sovllm.bench import metrics
from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import RunResult
from sovllm.planner.slo import SLO
from sovllm.planner.workload import Load


def done(
    rid: int,
    sent: float,
    chunks: list[float],
    tokens: int | None = None,
    scheduled: float | None = None,
    warmup: bool = False,
    prompt: int = 100,
) -> RequestRecord:
    """A successful request: first token at chunks[0], last at chunks[-1], end just after."""
    r = RequestRecord(
        id=rid,
        scheduled=sent if scheduled is None else scheduled,
        output_tokens_target=tokens or len(chunks),
    )
    r.warmup = warmup
    r.sent = sent
    r.chunk_times = list(chunks)
    r.first_token = chunks[0]
    r.last_token = chunks[-1]
    r.end = chunks[-1] + 0.001
    r.output_tokens = tokens if tokens is not None else len(chunks)
    r.prompt_tokens = prompt
    r.prompt_tokens_target = prompt
    r.token_source = "usage"
    r.status = "ok"
    return r


def failed(rid: int, sent: float, kind: str, warmup: bool = False) -> RequestRecord:
    r = RequestRecord(id=rid, scheduled=sent, output_tokens_target=4)
    r.warmup = warmup
    r.sent = sent
    r.end = sent + 0.01
    r.fail(kind, "boom")
    return r


def result(
    records: list[RequestRecord],
    warmup_end: float = 0.0,
    interrupted: bool = False,
    stopped_at: float = 5.0,
) -> RunResult:
    return RunResult(
        load=Load("users", 2),
        records=records,
        t0=0.0,
        warmup_end=warmup_end,
        stop_at=100.0,
        stopped_at=stopped_at,
        finished_at=10.0,
        reason="duration",
        interrupted=interrupted,
    )


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert metrics.percentile(values, 50) == pytest.approx(50.5)
    assert metrics.percentile(values, 90) == pytest.approx(90.1)
    assert metrics.percentile(values, 99.9) == pytest.approx(99.901)
    assert metrics.percentile([7.0], 95) == 7.0
    assert metrics.percentile([1.0, 3.0], 50) == 2.0


def test_stats_of_known_values() -> None:
    st = metrics.stats([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert st["count"] == 8
    assert st["mean"] == pytest.approx(5.0)
    assert st["std"] == pytest.approx(2.0)
    assert (st["min"], st["max"]) == (2.0, 9.0)
    assert st["p50"] == pytest.approx(4.5)
    empty = metrics.stats([])
    assert empty["count"] == 0 and empty["p95"] is None


def test_one_request_timeline() -> None:
    # scheduled 10.0, sent 10.5, chunks at 11.0, 11.2, 11.5, 12.0 carrying 4 tokens
    r = done(0, 10.5, [11.0, 11.2, 11.5, 12.0], scheduled=10.0)
    assert metrics.queue_delay(r) == pytest.approx(0.5)
    assert metrics.ttft(r) == pytest.approx(0.5)
    assert metrics.e2e(r) == pytest.approx(1.5)
    assert metrics.tpot(r) == pytest.approx((1.5 - 0.5) / 3)
    assert metrics.itls(r) == pytest.approx([0.2, 0.3, 0.5])


def test_tpot_counts_tokens_not_chunks() -> None:
    # Speculative decoding: 2 chunks carry 9 tokens. TPOT divides by tokens - 1, ITL is per chunk.
    r = done(0, 0.0, [0.4, 1.2], tokens=9)
    assert metrics.tpot(r) == pytest.approx(0.8 / 8)
    assert metrics.itls(r) == pytest.approx([0.8])


def test_one_token_answer_has_no_tpot() -> None:
    r = done(0, 0.0, [0.3], tokens=1)
    assert metrics.tpot(r) is None
    assert metrics.ttft(r) == pytest.approx(0.3)


def test_failures_have_no_latency() -> None:
    r = failed(0, 1.0, "HTTP 500")
    assert metrics.ttft(r) is None and metrics.e2e(r) is None and metrics.itls(r) == []
    assert metrics.queue_delay(r) == 0.0


def test_summary_of_a_small_run() -> None:
    records = [
        done(0, 0.5, [0.9, 1.0], warmup=True),  # warmup: not counted
        done(1, 1.0, [1.2, 1.4, 1.6, 1.8, 2.0]),  # ttft .2 tpot .2
        done(2, 2.0, [2.4, 2.5, 2.6, 2.7, 2.8]),  # ttft .4 tpot .1
        done(3, 3.0, [4.0, 4.5, 5.0, 5.5, 6.0]),  # ttft 1.0 tpot .5
        failed(4, 4.0, "HTTP 500"),
        failed(5, 5.0, "HTTP 500"),
        failed(6, 5.5, "timeout"),
    ]
    s = metrics.summarise(result(records, warmup_end=1.0), SLO.parse("ttft_p50=0.5"))
    assert s["requests"] == {"measured": 6, "ok": 3, "error": 3, "incomplete": 0, "warmup": 1}
    assert s["errors"] == {"HTTP 500": 2, "timeout": 1}
    # window: warmup end (1.0) to the last end (6.001)
    duration = 6.001 - 1.0
    assert s["window"]["duration_s"] == pytest.approx(duration)
    assert s["latency_s"]["ttft"]["count"] == 3
    assert s["latency_s"]["ttft"]["mean"] == pytest.approx((0.2 + 0.4 + 1.0) / 3)
    assert s["latency_s"]["ttft"]["p50"] == pytest.approx(0.4)
    assert s["latency_s"]["tpot"]["p50"] == pytest.approx(0.2)
    assert s["latency_s"]["itl"]["count"] == 12
    thr = s["throughput"]
    assert thr["requests_per_s"] == pytest.approx(3 / duration)
    assert thr["output_tokens_per_s"] == pytest.approx(15 / duration)
    assert thr["total_tokens_per_s"] == pytest.approx((15 + 300) / duration)
    busy = (2.001 - 1.0) + (2.801 - 2.0) + (6.001 - 3.0) + 3 * 0.01
    assert thr["mean_concurrency"] == pytest.approx(busy / duration)
    # Goodput: requests 1 and 2 meet ttft <= 0.5; request 3 and the three failures miss.
    slo = s["slo"]
    assert slo["good_requests"] == 2
    assert slo["attainment"] == pytest.approx(2 / 6)
    assert slo["goodput_requests_per_s"] == pytest.approx(2 / duration)
    # The SLO's p50 counts failures as infinitely slow: [0.2, 0.4, 1.0, inf, inf, inf] -> inf.
    (term,) = slo["terms"]
    assert term["value_s"] == math.inf and term["met"] is False and slo["met"] is False
    assert s["tokens"]["prompt_target_check"] == {
        "checked": 3,
        "exact": 3,
        "max_abs_error": 0,
        "mean_abs_error": 0.0,
    }


def test_idle_time_at_the_end_is_part_of_the_window() -> None:
    # The load stopped at 10 s; the last request ended at 2.001 s (users were thinking).
    records = [done(0, 1.0, [1.5, 2.0], tokens=2)]
    s = metrics.summarise(result(records, warmup_end=1.0, stopped_at=10.0), SLO())
    assert s["window"]["duration_s"] == pytest.approx(9.0)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(2 / 9.0)


def test_slo_met_and_goodput_without_failures() -> None:
    records = [done(i, float(i), [i + 0.1 * (i + 1), i + 1.0], tokens=10) for i in range(10)]
    slo = SLO.parse("ttft_p90=0.95,tpot_p50=0.1")
    s = metrics.summarise(result(records), slo)
    ttft = s["slo"]["terms"][0]
    assert ttft["value_s"] == pytest.approx(
        metrics.percentile([0.1 * (i + 1) for i in range(10)], 90)
    )
    assert ttft["met"] is True
    # tpot = (1.0 - ttft) / 9: at most 0.1 for every request
    assert s["slo"]["met"] is True
    # Per request: ttft 1.0 (the 10th) misses 0.95.
    assert s["slo"]["good_requests"] == 9


def test_interrupted_run_drops_only_the_requests_it_cancelled() -> None:
    cancelled = RequestRecord(id=2, scheduled=2.0, output_tokens_target=4)
    cancelled.sent = 2.0
    cancelled.error_type = "cancelled"
    timed_out = failed(3, 2.5, "timeout")
    records = [done(0, 0.0, [0.1, 0.2]), done(1, 1.0, [1.1, 1.2]), cancelled, timed_out]
    s = metrics.summarise(result(records, interrupted=True), SLO())
    assert s["requests"]["measured"] == 3
    assert s["errors"] == {"timeout": 1}


def test_itl_slo_uses_each_requests_own_gaps() -> None:
    smooth = done(0, 0.0, [0.1, 0.2, 0.3, 0.4])
    stall = done(1, 0.0, [0.1, 0.2, 0.3, 2.0])
    slo = SLO.parse("itl_p99=0.5")
    assert metrics.request_meets(smooth, slo)
    assert not metrics.request_meets(stall, slo)


def test_timeline_spreads_tokens_over_chunks() -> None:
    # 2 chunks carrying 10 tokens: 5 tokens land in each chunk's bucket.
    r = done(0, 0.0, [0.5, 1.5], tokens=10)
    rows = metrics.timeline([r], 0.0, 2.0, 1.0)
    assert [row["output_tokens"] for row in rows] == [5.0, 5.0]
    assert [row["requests"] for row in rows] == [0.0, 1.0]


def test_the_prefix_cache_share_counts_only_requests_that_report_it() -> None:
    hit, miss, silent = done(1, 0.0, [0.1, 0.2]), done(2, 0.0, [0.1, 0.2]), done(3, 0.0, [0.1])
    hit.cached_tokens, miss.cached_tokens = 75, 0  # of 100 prompt tokens each
    assert metrics.tokens_summary([hit, miss, silent])["cached_prompt_fraction"] == 0.375
    assert metrics.tokens_summary([silent])["cached_prompt_fraction"] is None
