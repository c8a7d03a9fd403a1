"""`sovllm plan size --html`: one self-contained page (issue #16 item 6; docs/planner.md,
"The HTML report"), checked on the article's case: well-formed, no script and no URL, one SVG
per chart, the SLO line where the SLO is, memory bars that add up to the memory per GPU, and
cost and energy figures equal to the JSON's."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sovllm.cli.main import app

# docs/planner.md, "The A100 rows": the article's case under its tight SLO.
ARTICLE_CMD = (
    "plan size --model llama-3.3-70b --users 100 --prompt-tokens 300-500 --output-tokens 200 "
    "--gpus a100-80gb-sxm --precisions fp16 --ttft-p95 0.5 --tpot-p95 0.05"
)
ARTICLE = ARTICLE_CMD.split()
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str, **attrs: str) -> list[Node]:
        out = (
            [self]
            if self.tag == tag and all(self.attrs.get(k) == v for k, v in attrs.items())
            else []
        )
        for c in self.children:
            out += c.find(tag, **attrs)
        return out

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class Tree(HTMLParser):
    """A strict tree builder: every element closes, in order (the page is well-formed)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self.stack[-1].tag != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1].tag}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(Node("#text", {}, text=data))


def parse(page: str) -> Node:
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.errors == []
    assert [n.tag for n in tree.stack] == ["#root"], "elements left open"
    return tree.root


@pytest.fixture(scope="module")
def article(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The article's case (docs/planner.md) sized once: its page and its JSON."""
    path = tmp_path_factory.mktemp("plan-html") / "report.html"
    res = CliRunner().invoke(app, [*ARTICLE, "--html", str(path), "--json"])
    assert res.exit_code == 0, res.output
    return path.read_text(encoding="utf-8"), json.loads(res.stdout)


def candidates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc["recommendation"], *doc["alternatives"]][:4]


def svgs(root: Node) -> dict[str, Node]:
    return {s.find("title")[0].all_text(): s for s in root.find("svg")}


def test_the_page_is_well_formed_self_contained_and_has_one_svg_per_chart(
    article: tuple[str, dict[str, Any]],
) -> None:
    page, _ = article
    root = parse(page)
    assert page.startswith("<!doctype html>")
    assert not root.find("script") and "<script" not in page.lower()
    assert not re.search(r"https?:", page), "a URL in a page that must not fetch anything"
    assert not re.search(r"\b(src|href)=|@import|url\(", page)
    assert sorted(svgs(root)) == [
        "Cost per year (EUR)",
        "Memory per GPU (GB)",
        "TPOT p95 against users",
        "TTFT p95 against users",
    ]
    assert len(root.find("svg")) == 4


def _y_of(svg: Node, value: float) -> float:
    """The y pixel of `value` on the chart's axis, from two of its labelled ticks."""
    ticks = [
        (float(t.all_text().replace(",", "")), float(t.attrs["y"]) - 4)
        for t in svg.find("text")
        if t.attrs.get("class") == "yt" and re.fullmatch(r"[\d.,]+", t.all_text())
    ]
    (v0, y0), (v1, y1) = ticks[0], ticks[-1]
    return y0 + (value - v0) * (y1 - y0) / (v1 - v0)


@pytest.mark.parametrize(
    ("title", "slo"), [("TTFT p95 against users", 0.5), ("TPOT p95 against users", 50.0)]
)
def test_the_slo_line_is_at_the_slo(
    article: tuple[str, dict[str, Any]], title: str, slo: float
) -> None:
    page, doc = article
    svg = svgs(parse(page))[title]
    (limit,) = [n for n in svg.find("line") if n.attrs.get("class") == "limit"]
    assert float(limit.attrs["data-value"]) == slo
    assert float(limit.attrs["y1"]) == float(limit.attrs["y2"])
    assert float(limit.attrs["y1"]) == pytest.approx(_y_of(svg, slo), abs=0.11)
    # One curve per candidate drawn, each with a point per user count swept.
    lines = svg.find("polyline")
    assert len(lines) == len(candidates(doc)) == 3
    assert all(len(pl.attrs["points"].split()) == 8 for pl in lines)


def test_the_curves_cross_the_slo_where_the_sizing_says(
    article: tuple[str, dict[str, Any]],
) -> None:
    # The recommendation meets the SLO at the users sized for; by 4x them TP=4 misses it.
    from sovllm.planner.catalog import get_engine, get_hardware, get_model
    from sovllm.planner.cost import CostParams
    from sovllm.planner.question import SizingQuestion
    from sovllm.planner.search import latency_sweep, size, sweep_users
    from sovllm.planner.slo import SLO
    from sovllm.planner.workload import Lengths

    _, doc = article
    r = size(
        SizingQuestion(
            model=get_model("llama-3.3-70b"),
            engine=get_engine("vllm"),
            gpus=(get_hardware("a100-80gb-sxm"),),
            precisions=("fp16",),
            users=100,
            prompt=Lengths.parse("300-500"),
            output=Lengths.parse("200"),
            think_time_s=30.0,
            slo=SLO.p95(0.5, 0.05),
            cost=CostParams(),
        )
    )
    best = r.best
    assert best is not None and best.prediction is not None and best.prediction.sim is not None
    counts = sweep_users(100)
    assert counts == [25, 50, 75, 100, 150, 200, 300, 400]
    points = latency_sweep(r, best, counts)
    assert points == latency_sweep(r, best, counts)  # deterministic
    at_100 = next(p for p in points if p.users == 100)
    assert at_100.ttft_p95_s == best.prediction.sim.ttft.p95  # the table's figure
    assert at_100.tpot_p95_s == best.prediction.sim.tpot.p95
    assert doc["recommendation"]["tpot_s"]["p95"] == pytest.approx(at_100.tpot_p95_s, abs=1e-4)
    assert points[-1].tpot_p95_s > 0.05 > at_100.tpot_p95_s


def test_the_memory_bars_add_up_to_the_memory_per_gpu(
    article: tuple[str, dict[str, Any]],
) -> None:
    page, doc = article
    svg = svgs(parse(page))["Memory per GPU (GB)"]
    segs = [n for n in svg.find("rect") if n.attrs.get("class") == "seg"]
    names = ["weights", "KV cache", "activations", "overhead"]
    cands = candidates(doc)
    assert len(segs) == 4 * len(cands)
    scale = []
    for i, c in enumerate(cands):
        bar = segs[4 * i : 4 * i + 4]
        assert [s.attrs["data-name"] for s in bar] == names
        total = sum(float(s.attrs["data-value"]) for s in bar)
        assert total == pytest.approx(c["memory"]["per_gpu_gb"], abs=0.005)
        assert float(bar[0].attrs["data-value"]) == c["memory"]["weights_gb"]
        # The drawn lengths are to one scale: the bar's width is its total.
        scale.append(sum(float(s.attrs["width"]) for s in bar) / total)
    assert max(scale) == pytest.approx(min(scale), rel=1e-3)
    marks = [n for n in svg.find("line") if n.attrs.get("class") == "mark"]
    assert [float(m.attrs["data-value"]) for m in marks] == [
        c["memory"]["usable_gb"] for c in cands
    ]


def _table_rows(root: Node, first_header: str) -> dict[str, list[str]]:
    for table in root.find("table"):
        head = [th.all_text() for th in table.find("th")]
        if head and head[0] == first_header:
            rows = {}
            for tr in table.find("tr")[1:]:
                cells = [td.all_text() for td in tr.find("td")]
                rows[cells[0]] = cells[1:]
            return rows
    raise AssertionError(f"no table headed {first_header!r}")


def test_cost_and_energy_figures_equal_the_json(article: tuple[str, dict[str, Any]]) -> None:
    page, doc = article
    root = parse(page)
    cands = candidates(doc)
    cost = _table_rows(root, "EUR per year")
    assert cost["on premise per year"] == [f"{c['cost']['onprem_per_year']:,.0f}" for c in cands]
    assert cost["cloud per year"] == [f"{c['cost']['cloud_per_year']:,.0f}" for c in cands]
    for item in ("amortisation", "power", "hosting", "staff"):
        assert cost[f"on premise: {item}"] == [
            f"{c['cost']['onprem_breakdown_per_year'][item]:,.0f}" for c in cands
        ]
    energy = _table_rows(root, "")
    for label, key, digits in (
        ("kWh per day", "kwh_per_day", 1),
        ("kg CO2e per day", "kg_co2e_per_day", 1),
        ("kWh per 1,000 answers", "kwh_per_1000_answers", 3),
        ("kg CO2e per 1,000 answers", "kg_co2e_per_1000_answers", 3),
    ):
        assert energy[label] == [f"{c['energy'][key]:,.{digits}f}" for c in cands], label
    # The cost chart's bars carry the same figures.
    svg = svgs(root)["Cost per year (EUR)"]
    cloud = [
        float(s.attrs["data-value"])
        for s in svg.find("rect")
        if s.attrs.get("data-name") == "cloud"
    ]
    assert cloud == [c["cost"]["cloud_per_year"] for c in cands]
    # And the JSON's figures follow from its own power, cost and answer rate.
    grid = 0.25
    for c in cands:
        e, m = c["energy"], c["cost"]
        assert e["kwh_per_day"] == pytest.approx(24 * e["power_kw"], abs=0.2)
        assert e["kg_co2e_per_day"] == pytest.approx(24 * e["power_kw"] * grid, abs=0.1)
        per_1k = 1000 * e["power_kw"] / (c["requests_per_s"] * 3600)
        assert e["kwh_per_1000_answers"] == pytest.approx(per_1k, abs=2e-3)
        assert e["kg_co2e_per_1000_answers"] == pytest.approx(per_1k * grid, abs=1e-3)
        assert m["onprem_per_year"] == pytest.approx(12 * m["onprem_per_month"], abs=12)
        assert m["cloud_per_year"] == pytest.approx(12 * m["cloud_per_month"], abs=12)


def test_the_page_names_the_engine_profile_and_its_validation_error(
    article: tuple[str, dict[str, Any]],
) -> None:
    from sovllm.planner.catalog import get_engine
    from sovllm.planner.validation import engine_errors, summarise

    page, _ = article
    root = parse(page)
    assert get_engine("vllm").provenance in root.all_text()
    summary = _table_rows(root, "metric")
    held_out = next(
        s
        for s in summarise(engine_errors("vllm"))
        if s.subset == "held-out" and s.group == "throughput"
    )
    assert summary["throughput"][:3] == [
        "held-out",
        str(held_out.rows),
        f"{held_out.median_abs_pct:,.1f}",
    ]
    assumptions = _table_rows(root, "assumption")
    assert assumptions["users"] == ["100", "--users"]
    assert assumptions["purchase spread over"] == ["3 years (straight line)", "--years"]
    assert assumptions["electricity"] == ["0.25 EUR per kWh", "--electricity-price"]
    assert assumptions["PUE (facility power / IT power)"] == ["1.4", "--pue"]
    assert assumptions["staff"] == ["30,000 EUR per year", "--staff-per-year"]
    assert assumptions["hosting per server"] == ["12,000 EUR per year", "--hosting-per-year"]


def test_an_unvalidated_profile_says_so() -> None:
    from sovllm.planner.cost import CostParams
    from sovllm.planner.html import render

    doc: dict[str, Any] = {
        "inputs": _inputs(),
        "model_memory": {},
        "recommendation": None,
        "alternatives": [],
    }
    page = render(doc, [], [], CostParams())
    parse(page)
    assert "No measured row uses this profile" in page
    assert "No configuration meets the SLO" in page


def _inputs() -> dict[str, Any]:
    return {
        "model": "m",
        "users": 3,
        "prompt_tokens": "10",
        "output_tokens": "5",
        "cached_prompt_fraction": 0.0,
        "think_time_s": 1.0,
        "ttft_p95_s": 1.0,
        "tpot_p95_s": 0.1,
        "engine": "sglang",
        "engine_provenance": "",
        "precisions": ["bf16"],
    }


def test_every_text_is_escaped(article: tuple[str, dict[str, Any]]) -> None:
    from sovllm.planner.cost import CostParams
    from sovllm.planner.html import render
    from sovllm.planner.search import SweepPoint

    _, doc = article
    evil = "<img src=x onerror=alert(1)>&"
    doc = json.loads(json.dumps(doc))
    doc["inputs"]["model"] = evil
    doc["inputs"]["engine_provenance"] = evil
    doc["recommendation"]["gpu"] = evil
    doc["rejected"][0]["reason"] = evil
    sweeps = [[SweepPoint(10, 0.1, 0.01)] for _ in candidates(doc)]
    page = render(doc, sweeps, [], CostParams(currency="<EUR>"))
    root = parse(page)
    assert "<img" not in page and "<EUR>" not in page
    assert not root.find("img")
    assert evil in root.all_text()  # shown as text, not markup


def test_the_terminal_output_stays_compact_and_names_the_report(tmp_path: Path) -> None:
    path = tmp_path / "r.html"
    res = CliRunner().invoke(app, [*ARTICLE, "--html", str(path)])
    assert res.exit_code == 0, res.output
    assert res.output.rstrip().endswith(f"Report: {path}")
    assert "<svg" not in res.output and path.read_text(encoding="utf-8").count("<svg") == 4


@pytest.mark.parametrize("where", ["missing/r.html", "folder", "file.txt/r.html"])
def test_an_unwritable_html_path_is_a_usage_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    res = CliRunner().invoke(app, [*ARTICLE, "--html", str(tmp_path / where)])
    assert res.exit_code == 2, res.output
    assert "'--html'" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "missing").exists()


def test_a_replayed_sizing_is_swept_over_its_recorded_lengths() -> None:
    # size_replay's lengths are the recorded requests' own (a file-kind Lengths): the sweep runs
    # closed-loop users over them, and the page renders.
    from sovllm.planner.catalog import get_engine, get_hardware, get_model
    from sovllm.planner.cost import CostParams
    from sovllm.planner.html import render
    from sovllm.planner.question import SizingQuestion
    from sovllm.planner.report import size_json
    from sovllm.planner.search import latency_sweep, size_replay, sweep_users
    from sovllm.planner.slo import SLO
    from sovllm.planner.workload import Lengths, Load

    n = 40
    trace = Load("trace", n, arrivals=tuple(i / 4 for i in range(n)))
    prompt = Lengths.from_values([200 + 50 * (i % 7) for i in range(n)])
    output = Lengths.from_values([20 + 30 * (i % 5) for i in range(n)])
    r = size_replay(
        SizingQuestion(
            model=get_model("llama-3.1-8b"),
            engine=get_engine("vllm"),
            gpus=(get_hardware("h100-sxm"),),
            precisions=("bf16",),
            users=8,
            prompt=prompt,
            output=output,
            think_time_s=5.0,
            slo=SLO.p95(1.0, 0.1),
            cost=CostParams(),
            max_tp=1,
            trace=trace,
        )
    )
    assert r.best is not None
    points = latency_sweep(r, r.best, sweep_users(r.users))
    assert [p.users for p in points] == [2, 4, 6, 8, 12, 16, 24, 32]
    assert all(p.ttft_p95_s > 0 and p.tpot_p95_s > 0 for p in points)
    doc = size_json(r, ["bf16"])
    page = render(doc, [points], [], CostParams())
    root = parse(page)
    assert len(root.find("svg")) == 4
    assert "from file" in _table_rows(root, "assumption")["prompt tokens"][0]
    assert _table_rows(root, "assumption")["prompt tokens"][1] == "--lengths-from"
