"""Monthly cost (on-premise vs cloud), cost per million tokens, energy and CO2e."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sovllm.planner.errors import ScenarioError
from sovllm.planner.specs import Hardware

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class CostParams:
    currency: str = "EUR"
    usd_rate: float = 0.92  # units of `currency` per USD, for catalog prices in USD
    gpu_price: float | None = None  # purchase price per GPU in `currency` (default: catalog)
    cloud_price: float | None = None  # per GPU-hour in `currency` (default: catalog)
    years: float = 3.0  # straight-line amortisation
    # A server (CPUs, RAM, NICs, chassis) per 8 GPUs, as a fraction of the GPUs' price.
    server_overhead: float = 0.35
    electricity_price: float = 0.25  # per kWh
    pue: float = 1.4
    load_power_fraction: float = 0.75  # average draw under serving load as a fraction of TDP
    host_power_w_per_gpu: float = 150.0  # CPUs, fans, NICs per GPU slot
    hosting_per_year: float = 12000.0  # rack space, network, support contract per server
    staff_per_year: float = 30000.0  # share of an operator for the deployment
    grid_kg_per_kwh: float = 0.25  # kg CO2e per kWh (EU-27 average is about 0.25)

    def check(self) -> None:
        """Raise ScenarioError naming the first price or factor that cannot be costed."""
        if not self.currency.strip():
            raise ScenarioError("currency", "give a currency label, e.g. EUR")
        optional = (("gpu_price", self.gpu_price), ("cloud_price", self.cloud_price))
        given = (
            ("years", self.years),
            ("pue", self.pue),
            ("usd_rate", self.usd_rate),
            ("electricity_price", self.electricity_price),
            ("hosting_per_year", self.hosting_per_year),
            ("staff_per_year", self.staff_per_year),
            ("grid_kg_per_kwh", self.grid_kg_per_kwh),
            *((k, v) for k, v in optional if v is not None),
        )
        for name, value in given:
            if not math.isfinite(value):
                raise ScenarioError(name, f"must be a finite number, got {value}")
        for name, value in (("years", self.years), ("usd_rate", self.usd_rate)):
            if not value > 0:
                raise ScenarioError(name, f"must be above 0, got {value}")
        if self.pue < 1:
            raise ScenarioError(
                "pue", f"must be at least 1 (facility power / IT power), got {self.pue}"
            )
        for name, value in (
            ("electricity_price", self.electricity_price),
            ("hosting_per_year", self.hosting_per_year),
            ("staff_per_year", self.staff_per_year),
            ("grid_kg_per_kwh", self.grid_kg_per_kwh),
            ("gpu_price", self.gpu_price or 0.0),
            ("cloud_price", self.cloud_price or 0.0),
        ):
            if value < 0:
                raise ScenarioError(name, f"must be 0 or more, got {value}")


@dataclass(frozen=True)
class CostReport:
    currency: str
    gpus: int
    servers: int
    power_kw: float
    energy_kwh_per_month: float
    purchase: float
    onprem_per_month: float
    onprem_breakdown: dict[str, float]
    cloud_per_month: float
    tokens_per_month: float
    onprem_per_mtok: float
    cloud_per_mtok: float
    kwh_per_mtok: float
    kg_co2e_per_mtok: float
    kg_co2e_per_month: float
    years: float = 3.0  # the amortisation period the monthly capex is spread over
    answers_per_month: float = 0.0
    kwh_per_1k_answers: float = math.inf
    kg_co2e_per_1k_answers: float = math.inf

    @property
    def onprem_per_year(self) -> float:
        return 12 * self.onprem_per_month

    @property
    def cloud_per_year(self) -> float:
        return 12 * self.cloud_per_month

    @property
    def kwh_per_day(self) -> float:
        return 24 * self.power_kw

    @property
    def answers_per_day(self) -> float:
        return self.answers_per_month / HOURS_PER_MONTH * 24

    @property
    def kg_co2e_per_day(self) -> float:
        return self.kg_co2e_per_month / HOURS_PER_MONTH * 24


def cost_report(
    hw: Hardware, gpus: int, tokens_per_s: float, p: CostParams, requests_per_s: float = 0.0
) -> CostReport:
    """`tokens_per_s` and `requests_per_s`: the output tokens and answers the deployment serves
    at the sized load, for the figures per million tokens and per 1,000 answers."""
    gpu_price = p.gpu_price if p.gpu_price is not None else hw.price_usd * p.usd_rate
    cloud_hour = p.cloud_price if p.cloud_price is not None else hw.cloud_usd_per_hour * p.usd_rate
    if hw.kind == "cpu":
        # A measured machine (cpu-local): each box is a whole server, and its power figure is
        # the whole box's, so no server share and no host power are added.
        servers, server_overhead, host_w = gpus, 0.0, 0.0
    else:
        servers = max(1, math.ceil(gpus / 8))
        server_overhead, host_w = p.server_overhead, p.host_power_w_per_gpu
    purchase = gpus * gpu_price * (1 + server_overhead)
    power_kw = gpus * (hw.tdp_w * p.load_power_fraction + host_w) / 1000 * p.pue
    kwh = power_kw * HOURS_PER_MONTH
    breakdown = {
        "amortisation": purchase / (p.years * 12),
        "power": kwh * p.electricity_price,
        "hosting": servers * p.hosting_per_year / 12,
        "staff": p.staff_per_year / 12,
    }
    onprem = sum(breakdown.values())
    cloud = gpus * cloud_hour * HOURS_PER_MONTH
    tokens = tokens_per_s * HOURS_PER_MONTH * 3600
    mtok = tokens / 1e6
    kanswers = requests_per_s * HOURS_PER_MONTH * 3600 / 1000
    return CostReport(
        currency=p.currency,
        gpus=gpus,
        servers=servers,
        power_kw=power_kw,
        energy_kwh_per_month=kwh,
        purchase=purchase,
        onprem_per_month=onprem,
        onprem_breakdown=breakdown,
        cloud_per_month=cloud,
        tokens_per_month=tokens,
        onprem_per_mtok=onprem / mtok if mtok else math.inf,
        cloud_per_mtok=cloud / mtok if mtok else math.inf,
        kwh_per_mtok=kwh / mtok if mtok else math.inf,
        kg_co2e_per_mtok=kwh * p.grid_kg_per_kwh / mtok if mtok else math.inf,
        kg_co2e_per_month=kwh * p.grid_kg_per_kwh,
        years=p.years,
        answers_per_month=kanswers * 1000,
        kwh_per_1k_answers=kwh / kanswers if kanswers else math.inf,
        kg_co2e_per_1k_answers=kwh * p.grid_kg_per_kwh / kanswers if kanswers else math.inf,
    )
