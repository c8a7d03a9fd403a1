"""`sovllm:energy_joules_total{tenant,model,source}`: the joules of ended requests."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sovllm.observability.energy.meter import EnergyMeter


class EnergyCollector(Collector):
    def __init__(self, meter: EnergyMeter) -> None:
        self._meter = meter

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "sovllm:energy_joules",
            "Energy of ended requests in joules, by tenant, model and source (measured:rapl, "
            "measured:nvml, measured:dcgm or estimated).",
            labels=["tenant", "model", "source"],
        )
        for (tenant, model, source), joules in list(self._meter.totals.items()):
            family.add_metric([tenant, model, source], joules)
        yield family
