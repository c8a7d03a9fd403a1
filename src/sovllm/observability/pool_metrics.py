"""Per-replica and pool-level gauges: what an autoscaler (HPA, KEDA) and the console read."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sovllm.pool.router import Pool


class PoolCollector(Collector):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["replica", "kind", "model_name"]
        healthy = GaugeMetricFamily(
            "sovllm:replica_healthy",
            "1 while the replica takes traffic (breaker closed).",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "sovllm:replica_num_requests_running",
            "Requests holding a slot on the replica.",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "sovllm:replica_num_requests_waiting", "Requests queued on the replica.", labels=labels
        )
        outstanding = GaugeMetricFamily(
            "sovllm:replica_outstanding_requests",
            "Requests this gateway has in flight on the replica.",
            labels=labels,
        )
        for r in self._pool.replicas:
            values = [r.name, r.kind, r.model_id]
            healthy.add_metric(values, 1.0 if r.healthy else 0.0)
            outstanding.add_metric(values, r.outstanding)
            if r.stats is not None:
                running.add_metric(values, r.stats.running)
                waiting.add_metric(values, r.stats.waiting)
        depth = GaugeMetricFamily(
            "sovllm:pool_queue_depth",
            "Requests waiting over all replicas of a model: the signal to scale on.",
            labels=["model_name"],
        )
        for name in self._pool.model_ids:
            depth.add_metric([name], self._pool.stats(name).waiting)
        yield from (healthy, running, waiting, outstanding, depth)
