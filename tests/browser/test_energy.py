"""The console's energy panel in a real browser: energy per tenant and day, charted from a
server whose RAPL reader reads a counter the test advances while a request runs."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.pages import sign_in_console
from tests.conftest import run_server
from tests.integration.test_energy import Counter, chat


def test_the_console_charts_energy_per_tenant_and_day(page: Page, tmp_path: Path) -> None:
    counter = Counter(tmp_path / "powercap")
    env = {
        "SOVLLM_ENGINE__THREADS": "1",
        "SOVLLM_ENERGY__SOURCE": "rapl",
        "SOVLLM_ENERGY__RAPL_ROOT": str(tmp_path / "powercap"),
        "SOVLLM_ENERGY__GRID_KG_PER_KWH": "0.25",
    }
    with run_server(tmp_path / "srv", env) as server:
        key = server.create_key("radiology")
        with counter.running():
            chat(server, key, 12)
        [day] = server.admin("GET", "/usage/energy", params={"tenant": "radiology"}).json()["data"]
        assert day["joules"] > 0

        sign_in_console(page, server.url, server.api_key)
        panel = page.locator("#panel-energy")
        expect(panel).to_be_visible()
        expect(page.locator("#nav-panels")).to_contain_text("Energy")
        row = page.locator("#energy-table tbody tr", has_text="radiology")
        expect(row).to_contain_text("measured (RAPL)")
        expect(row).to_contain_text(f"{day['kwh']:.6f}")
        chart = page.locator("#energy-chart svg")
        expect(chart).to_have_attribute("aria-label", re.compile(r"^Energy per day and tenant"))
        expect(page.locator("#energy-legend")).to_contain_text("radiology")
        # One bar: the one tenant on the one day with energy.
        expect(page.locator("#energy-chart svg rect")).to_have_count(1)
