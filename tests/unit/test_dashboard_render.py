"""scripts/dashboard_render.py: Grafana's variables, legends and grid, as the dashboard
screenshot (scripts/dashboard_snapshot.py) uses them on deploy/grafana/sovllm.json."""

from __future__ import annotations

import json
import re

import pytest
from scripts.dashboard_render import (
    grid_area,
    last_value,
    legend,
    page,
    page_size,
    panel_html,
    rate_interval,
    substitute,
)

from tests.unit.test_dashboard import DASHBOARD

PANELS = json.loads(DASHBOARD.read_text())["panels"]
VARIABLES = {"__rate_interval": "8s", "__range": "120s", "model": ".*"}


def test_substitute_fills_both_forms_and_tells_apart_similar_names() -> None:
    expr = 'rate(x{m=~"$model"}[$__rate_interval]) + increase(y{m=~"${model}"}[$__range])'
    assert substitute(expr, VARIABLES) == ('rate(x{m=~".*"}[8s]) + increase(y{m=~".*"}[120s])')
    with pytest.raises(ValueError, match=r"\$__interval"):
        substitute("rate(x[$__interval])", VARIABLES)


def test_every_dashboard_query_is_filled_in() -> None:
    exprs = [t["expr"] for p in PANELS for t in p.get("targets", [])]
    assert exprs
    assert all("$" not in substitute(e, VARIABLES) for e in exprs)


def test_rate_interval_is_grafanas() -> None:
    assert rate_interval(2, 2) == "8s"  # 4 x scrape
    assert rate_interval(10, 1) == "11s"  # step + scrape


def test_legend_follows_the_format() -> None:
    labels = {"model_name": "m", "status": "429", "code": "queue_full"}
    assert legend("p95 {{model_name}}", labels) == "p95 m"
    assert legend("{{ status }} {{code}}", labels) == "429 queue_full"
    assert legend("{{replica}}", labels) == ""
    assert legend("", {"b": "2", "a": "1"}) == '{a="1", b="2"}'


def test_grid_area_places_panels_and_refuses_outside_the_grid() -> None:
    assert grid_area({"x": 8, "y": 1, "w": 8, "h": 8}) == (
        "grid-column:9 / span 8;grid-row:2 / span 8"
    )
    with pytest.raises(ValueError, match="24-column"):
        grid_area({"x": 20, "y": 0, "w": 8, "h": 8})


def test_the_dashboards_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for p in PANELS:
        g = p["gridPos"]
        grid_area(g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, (p["title"], taken.get((x, y)))
                taken[(x, y)] = p["title"]


def test_the_page_shows_every_panel_with_its_data() -> None:
    ids = {p["title"]: p["id"] for p in PANELS}
    data = {
        ids["Time to first token"]: [[("p50 m", [(0.0, 0.1), (2.0, 0.2)])], []],
        ids["Replicas and data volume"]: [
            [("healthy replicas", [(0.0, 2.0), (2.0, float("nan"))])],
            [],
            [],
        ],
    }
    out = page(PANELS, data, "t", "sub", "seconds", 1800, {ids["Stops"]: "a note"})
    for p in PANELS:
        assert p["title"] in out
    assert "<polyline" in out and "p50 m" in out
    assert re.search(r"<b>2</b>healthy replicas", out)  # the last finite value
    assert "a note" in out
    assert "<script" not in out and "http" not in out  # nothing to fetch
    assert (
        out.count('class="empty">no data')
        == sum(p["type"] in ("timeseries", "bargauge") for p in PANELS) - 1
    )
    width, height = page_size(PANELS, 1800)
    assert width == 1800 and height > 45 * 38


def test_a_time_series_fills_its_panel() -> None:
    (ttft,) = [p for p in PANELS if p["title"] == "Time to first token"]
    series = [[("p50 m", [(0.0, 0.1), (2.0, 0.2)])]]
    assert 'viewBox="0 0 600 296"' in panel_html(ttft, series, "s", (600, 296))
    # A note under the panel takes its height from the chart.
    assert 'viewBox="0 0 600 276"' in panel_html(ttft, series, "s", (600, 296), "estimated")


def test_last_value_skips_gaps() -> None:
    assert last_value(("s", [(0, 1.0), (1, 3.0), (2, float("nan"))])) == 3.0
    assert last_value(("s", [])) is None
