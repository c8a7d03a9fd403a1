"""A screenshot of the Grafana dashboard's panels with data from a real run (issue #17).

Grafana cannot be installed here (not in Debian, not on PyPI), so this is the closest true
thing: a real `sovllm serve` (the real model, two worker replicas, estimated energy) on
loopback, scraped every --scrape seconds by a real Prometheus (Debian's); two `sovllm bench`
runs (tenants research and support) load it while a stop of one tenant comes and goes, a
rate-limited key is refused and a wrong key too; then every target of
deploy/grafana/sovllm.json is evaluated with Prometheus's query_range over the run, drawn in
the dashboard's grid (scripts/dashboard_render.py) and photographed with headless Chromium.

    .venv/bin/python scripts/dashboard_snapshot.py [--duration 90] [--out docs/images/dashboard.png]

Nothing leaves the machine; every process it starts is stopped by its PID on exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.dashboard_render import Target, legend, page, page_size, rate_interval, substitute
from tests.conftest import MODEL_ID, Server, free_port, run_server, wait_until, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "sovllm.json"
SERVER_ENV = {
    "SOVLLM_ENGINE__THREADS": "1",  # two workers on a small machine: one thread each
    # No energy counter on this machine (docs/observability.md, "This machine"): the estimate,
    # always labelled `estimated`, for a catalog GPU, so the energy panels have data.
    "SOVLLM_ENERGY__SOURCE": "estimated",
    "SOVLLM_ENERGY__HARDWARE": "l40s",
    "SOVLLM_ENERGY__GRID_KG_PER_KWH": "0.25",
}
NOTES = {
    14: "energy is `estimated` (source label): no counter on this machine; L40S TDP in the "
    "estimate",
    15: "estimated (see Energy per tenant)",
}


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this script started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def prometheus(target: str, tmp: Path, scrape_s: float) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if not binary:
        sys.exit("prometheus is missing: install Debian's `prometheus` (scripts/test.sh does)")
    every = f"{scrape_s:g}s"
    config = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "scrape_configs": [
            {
                "job_name": "sovllm",
                "scrape_timeout": every,
                "static_configs": [{"targets": [target.removeprefix("http://")]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(proc, f"{url}/-/ready", log, 60)
        yield url
    finally:
        stop(proc)


def bench(srv: Server, key: str, users: int, duration: float, out: Path) -> subprocess.Popen[bytes]:
    argv = [
        *(sys.executable, "-m", "sovllm", "bench", "--url", srv.base_url, "--api-key", key),
        *("--users", str(users), "--think-time", "1", "--turns", "3"),
        *("--prompt-tokens", "48-160", "--output-tokens", "16-32"),
        *("--warmup", "0", "--duration", f"{duration:g}", "--out", str(out)),
    ]
    with (out.parent / f"{out.name}.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def chat(srv: Server, key: str) -> int:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    r = httpx.post(
        f"{srv.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    return r.status_code


def at(start: float, offset: float) -> None:
    """Wait until `offset` seconds after `start`: the load's script is a timetable."""
    time.sleep(max(0.0, start + offset - time.monotonic()))


def drive(srv: Server, tmp: Path, duration: float, users: int) -> None:
    """Two tenants' bench runs, with a stop of one tenant, quota refusals and a bad key."""
    research = srv.create_key("research")
    support = srv.create_key("support")
    trial = srv.create_key("trial", rpm=2)
    runs = {
        tenant: bench(srv, key, users, duration, tmp / f"bench-{tenant}")
        for tenant, key in (("research", research), ("support", support))
    }
    start = time.monotonic()
    try:
        at(start, 0.30 * duration)
        r = srv.admin(
            "POST",
            "/stop",
            json={
                "scope": "tenant",
                "target": "support",
                "reason": "dashboard snapshot: a planned stop",
            },
        )
        assert r.status_code == 200, r.text
        at(start, 0.45 * duration)
        r = srv.admin("POST", "/resume", json={"scope": "tenant", "target": "support"})
        assert r.status_code == 200, r.text
        at(start, 0.55 * duration)
        # rpm 2: two served, the third refused. The refusals' series starts at the first one,
        # which rate() cannot see, so the next ones come a few seconds apart, as retries do.
        codes = [chat(srv, trial) for _ in range(3)]
        for offset in (0.60, 0.63, 0.66, 0.69):
            at(start, offset * duration)
            codes.append(chat(srv, trial))
        codes.append(chat(srv, "sk-sovllm-not-a-key"))
        print("quota and bad-key answers:", codes, flush=True)
        at(start, 0.75 * duration)
        r = srv.admin("POST", "/audit/verify")
        assert r.status_code == 200, r.text
        for tenant, run in runs.items():
            if run.wait(timeout=duration + 180) != 0:
                log = tmp / f"bench-{tenant}.log"
                print(f"bench ({tenant}) exited {run.returncode}:\n{log.read_text()[-2000:]}")
    finally:
        for run in runs.values():
            stop(run)


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step}
    r = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"Prometheus refused {expr!r}: {r.text}")
    result: list[Any] = r.json()["data"]["result"]
    return result


def panel_data(
    prom: str, panels: list[dict[str, Any]], start: float, end: float, step: float, scrape: float
) -> dict[int, list[Target]]:
    variables = {
        "__rate_interval": rate_interval(step, scrape),
        "__range": f"{round(end - start)}s",
        "model": ".*",  # the `model` variable's "All"
    }
    data: dict[int, list[Target]] = {}
    for p in panels:
        targets: list[Target] = []
        for t in p.get("targets", []):
            found = query_range(prom, substitute(t["expr"], variables), start, end, step)
            targets.append(
                [
                    (
                        legend(t.get("legendFormat", ""), s["metric"]),
                        [(float(x) - start, float(v)) for x, v in s["values"]],
                    )
                    for s in found
                ]
            )
        data[p["id"]] = targets
    return data


def screenshot(html_file: Path, png: Path, size: tuple[int, int]) -> None:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if not chromium:
        sys.exit("chromium is missing (Debian's `chromium`)")
    with tempfile.TemporaryDirectory(prefix="sovllm-shot-") as profile:
        argv = [
            *(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            html_file.resolve().as_uri(),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"chromium made no screenshot ({done.returncode}): {done.stderr[-500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=90, help="seconds of bench load")
    ap.add_argument("--users", type=int, default=2, help="bench users per tenant")
    ap.add_argument("--scrape", type=float, default=2, help="Prometheus scrape interval (s)")
    ap.add_argument("--width", type=int, default=1800, help="page width in pixels")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    ap.add_argument("--html", type=Path, help="also keep the rendered page here")
    ap.add_argument("--logs", type=Path, help="keep the server's and the benches' logs here")
    args = ap.parse_args()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    with tempfile.TemporaryDirectory(prefix="sovllm-dashboard-") as name, ExitStack() as stack:
        tmp = Path(name)
        (tmp / "prometheus").mkdir()
        srv = stack.enter_context(
            run_server(tmp / "sovllm", env=SERVER_ENV, args=("--replicas", "2"))
        )
        prom = stack.enter_context(prometheus(srv.url, tmp / "prometheus", args.scrape))
        wait_until(
            lambda: query_range(prom, "sovllm:replica_healthy", time.time() - 5, time.time(), 1),
            "Prometheus's first scrape",
        )
        start = time.time()
        drive(srv, tmp, args.duration, args.users)
        wait_until(
            lambda: query_range(
                prom, "sovllm:audit_last_verify_ok", time.time() - 5, time.time(), 1
            ),
            "the verification in Prometheus",
        )
        at(time.monotonic(), 2 * args.scrape)  # the last requests' metrics scraped too
        end = time.time()
        data = panel_data(prom, panels, start, end, args.scrape, args.scrape)
        when = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        subtitle = (
            f"deploy/grafana/sovllm.json's queries, evaluated by a real Prometheus (scrape "
            f"{args.scrape:g} s) over a real run: sovllm serve --replicas 2 ({MODEL_ID}), two "
            f"`sovllm bench` tenants x {args.users} users for {args.duration:g} s, a stop of "
            f"tenant support, a rate-limited key; {when}, {os.cpu_count()} CPUs "
            f"({platform.machine()}), no GPU. Drawn by scripts/dashboard_render.py, not Grafana."
        )
        xlabel = f"seconds since {dt.datetime.fromtimestamp(start, dt.UTC):%H:%M:%S} UTC"
        html_file = tmp / "dashboard.html"
        html_file.write_text(
            page(panels, data, "sovllm (Grafana dashboard)", subtitle, xlabel, args.width, NOTES)
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html_file, args.out, page_size(panels, args.width))
        if args.html:
            shutil.copy(html_file, args.html)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in [srv.log, *tmp.glob("bench-*.log")]:
                shutil.copy(log, args.logs / log.name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
