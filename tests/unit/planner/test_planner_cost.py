from __future__ import annotations

import pytest

from sovllm.planner.catalog import get_hardware
from sovllm.planner.cost import HOURS_PER_MONTH, CostParams, cost_report

H100 = get_hardware("h100-sxm")


def test_onprem_is_the_sum_of_its_parts_and_cloud_is_gpu_hours() -> None:
    p = CostParams(currency="USD", usd_rate=1.0)
    c = cost_report(H100, 8, 1000.0, p)
    assert c.onprem_per_month == pytest.approx(sum(c.onprem_breakdown.values()))
    assert c.cloud_per_month == pytest.approx(8 * H100.cloud_usd_per_hour * HOURS_PER_MONTH)
    assert c.onprem_breakdown["amortisation"] == pytest.approx(c.purchase / 36)


def test_per_million_tokens_and_co2_follow_from_monthly_figures() -> None:
    p = CostParams(grid_kg_per_kwh=0.4)
    c = cost_report(H100, 2, 500.0, p)
    mtok = 500.0 * HOURS_PER_MONTH * 3600 / 1e6
    assert c.onprem_per_mtok == pytest.approx(c.onprem_per_month / mtok)
    assert c.kwh_per_mtok == pytest.approx(c.energy_kwh_per_month / mtok)
    assert c.kg_co2e_per_mtok == pytest.approx(0.4 * c.kwh_per_mtok)


def test_prices_and_currency_can_be_overridden() -> None:
    base = cost_report(H100, 4, 100.0, CostParams())
    cheap = cost_report(H100, 4, 100.0, CostParams(currency="CHF", gpu_price=1000, cloud_price=1.0))
    assert cheap.currency == "CHF"
    assert cheap.purchase < base.purchase
    assert cheap.cloud_per_month == pytest.approx(4 * HOURS_PER_MONTH)


def test_more_gpus_cost_and_draw_more() -> None:
    a, b = cost_report(H100, 8, 1.0, CostParams()), cost_report(H100, 16, 1.0, CostParams())
    assert b.power_kw == pytest.approx(2 * a.power_kw)
    assert b.onprem_per_month > a.onprem_per_month and b.servers == 2
