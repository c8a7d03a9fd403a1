"""Energy counters and their split: the real RAPL reader on counter files the test writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sovllm.config import ConfigError, load_settings
from sovllm.observability.energy.counters import EnergyUnavailable, RaplCounter, parse_dcgm
from sovllm.observability.energy.meter import EnergyMeter
from sovllm.observability.energy.metrics import EnergyCollector
from sovllm.observability.energy.split import co2e_grams, counter_delta, split_by_tokens

RANGE_UJ = 262_143_328_850  # a real package zone's max_energy_range_uj


class Rapl:
    """A powercap tree with package zones whose energy_uj the test advances."""

    def __init__(self, root: Path, packages: int = 1) -> None:
        self.root = root
        self.zones = []
        for n in range(packages):
            zone = root / f"intel-rapl:{n}"
            zone.mkdir(parents=True)
            (zone / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
            self.zones.append(zone)
            # A subzone (core) is part of its package: the reader must not count it again.
            sub = root / f"intel-rapl:{n}:0"
            sub.mkdir()
            (sub / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
            (sub / "energy_uj").write_text("0\n")
        self.uj = [1_000_000] * packages
        self._write()

    def _write(self) -> None:
        for zone, uj in zip(self.zones, self.uj, strict=True):
            (zone / "energy_uj").write_text(f"{uj}\n")

    def advance(self, joules: float, zone: int = 0) -> None:
        self.uj[zone] = (self.uj[zone] + round(joules * 1e6)) % (RANGE_UJ + 1)
        self._write()

    def set_uj(self, uj: int, zone: int = 0) -> None:
        self.uj[zone] = uj
        self._write()


def test_the_rapl_reader_sums_package_zones_and_ignores_subzones(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path, packages=2)
    counter = RaplCounter(tmp_path)
    assert counter.source == "measured:rapl"
    assert counter.read() == 0.0
    rapl.advance(12.5, zone=0)
    rapl.advance(7.5, zone=1)
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999999999\n")
    assert counter.read() == pytest.approx(20.0)


def test_the_rapl_reader_unwinds_a_wrap_around(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    rapl.set_uj(RANGE_UJ - 3_000_000)  # 3 J below the top
    counter = RaplCounter(tmp_path)
    rapl.set_uj(2_000_000)  # past the top: 3 J up to it, 1 J from 0 to the wrap, then 2 J
    assert counter.read() == pytest.approx(5.0, abs=1e-5)
    rapl.advance(10.0)
    assert counter.read() == pytest.approx(15.0, abs=1e-5)


def test_counter_delta() -> None:
    assert counter_delta(10, 25, 100) == 15
    assert counter_delta(90, 5, 100) == 15  # wrapped at 100
    assert counter_delta(90, 5, None) == 0.0  # went back without a range: unknown, not negative


def test_no_rapl_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailable, match="no intel-rapl package zones under"):
        RaplCounter(tmp_path)
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "max_energy_range_uj").write_text("100\n")
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("not a number\n")
    with pytest.raises(EnergyUnavailable, match=r"cannot read .*energy_uj"):
        RaplCounter(tmp_path)


def test_the_split_follows_tokens_exactly() -> None:
    shares = split_by_tokens(1000.0, {"a": 512, "b": 1, "c": 1, "d": 6})
    assert shares == {"a": 1000 * 512 / 520, "b": 1000 / 520, "c": 1000 / 520, "d": 6000 / 520}
    assert sum(shares.values()) == pytest.approx(1000.0, rel=1e-12)
    assert split_by_tokens(9.0, {"a": 0, "b": 0, "c": 0}) == {"a": 3.0, "b": 3.0, "c": 3.0}
    assert split_by_tokens(9.0, {}) == {}


def test_per_step_the_meter_shares_each_step_by_its_tokens(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    meter = EnergyMeter(RaplCounter(tmp_path), grid_kg_per_kwh=0.4)
    expected = {"a": 0.0, "b": 0.0, "c": 0.0}
    total = 0.0
    steps = [  # (joules the step used, tokens per sequence): prefill chunks, then decodes
        (40.0, [("a", 300), ("b", 100)]),
        (3.0, [("a", 1), ("b", 1), ("c", 64)]),
        (1.5, [("a", 1), ("b", 1), ("c", 1)]),
    ]
    for joules, tokens in steps:
        meter.step_started()
        rapl.advance(joules)
        meter.step_finished(tokens)
        total += joules
        n = sum(t for _, t in tokens)
        for rid, t in tokens:
            expected[rid] += joules * t / n
        rapl.advance(100.0)  # between steps (idle): nobody's
    got = {rid: meter.finish(rid, "t1", "m") for rid in expected}
    for rid, energy in got.items():
        assert energy is not None and energy.source == "measured:rapl"
        assert energy.joules == pytest.approx(expected[rid], rel=1e-6)
        assert energy.co2e_g == pytest.approx(co2e_grams(expected[rid], 0.4))
    assert sum(e.joules for e in got.values() if e) == pytest.approx(total, rel=0.01)
    assert meter.totals[("t1", "m", "measured:rapl")] == pytest.approx(total, rel=0.01)


def test_a_step_across_the_wrap_around_is_counted(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    rapl.set_uj(RANGE_UJ - 500_000)
    meter = EnergyMeter(RaplCounter(tmp_path), None)
    meter.step_started()
    rapl.advance(2.0)  # wraps
    assert rapl.uj[0] < 2_000_000
    meter.step_finished([("a", 1), ("b", 3)])
    a, b = meter.finish("a", "t", "m"), meter.finish("b", "t", "m")
    assert a is not None and b is not None
    assert (a.joules, b.joules) == (pytest.approx(0.5, abs=1e-5), pytest.approx(1.5, abs=1e-5))
    assert a.co2e_g is None  # no grid intensity set: no CO2e


def test_in_flight_the_meter_shares_by_tokens_since_the_last_reading(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    meter = EnergyMeter(RaplCounter(tmp_path), None)
    rapl.advance(1000.0)  # before anything is in flight: nobody's
    meter.tokens("a", 10)
    meter.tokens("b", 30)
    rapl.advance(400.0)
    a = meter.finish("a", "t", "m")  # a 10/40 of 400 J, b 30/40 kept for later
    meter.tokens("b", 5)
    rapl.advance(200.0)
    b = meter.finish("b", "t", "m")
    assert a is not None and b is not None
    assert a.joules == pytest.approx(100.0)
    assert b.joules == pytest.approx(500.0)
    assert a.joules + b.joules == pytest.approx(600.0, rel=0.01)


def test_in_flight_excludes_what_engine_steps_took(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    meter = EnergyMeter(RaplCounter(tmp_path), None)
    meter.tokens("remote", 10)
    meter.step_started()
    rapl.advance(30.0)
    meter.step_finished([("local", 8)])
    meter.tokens("local", 8)
    rapl.advance(50.0)
    remote, local = meter.finish("remote", "t", "m"), meter.finish("local", "t", "m")
    assert local is not None and local.joules == pytest.approx(30.0)
    assert remote is not None and remote.joules == pytest.approx(50.0)


def test_an_off_meter_and_a_counter_that_stops(tmp_path: Path) -> None:
    off = EnergyMeter(None, None)
    off.tokens("a", 3)
    assert off.finish("a", "t", "m") is None
    rapl = Rapl(tmp_path)
    meter = EnergyMeter(RaplCounter(tmp_path), None)
    meter.tokens("a", 3)
    (rapl.zones[0] / "energy_uj").unlink()  # the zone went away: logged, never raised
    meter.step_started()
    meter.step_finished([("a", 3)])
    assert meter.finish("a", "t", "m") is None


def test_the_collector_exports_joules_by_tenant_model_and_source(tmp_path: Path) -> None:
    rapl = Rapl(tmp_path)
    meter = EnergyMeter(RaplCounter(tmp_path), None)
    meter.step_started()
    rapl.advance(4.0)
    meter.step_finished([("r1", 1)])
    meter.finish("r1", "research", "smollm")
    registry = CollectorRegistry()
    registry.register(EnergyCollector(meter))
    text = generate_latest(registry).decode()
    line = 'sovllm:energy_joules_total{model="smollm",source="measured:rapl",tenant="research"}'
    assert f"{line} 4.0" in text


def test_dcgm_exposition_is_summed_over_gpus() -> None:
    text = (
        "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy (mJ).\n"
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="a"} 1500000\n'
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="1",UUID="b"} 500000\n'
        'DCGM_FI_DEV_POWER_USAGE{gpu="0"} 300\n'
    )
    assert parse_dcgm(text) == pytest.approx(2000.0)
    assert parse_dcgm('DCGM_FI_DEV_POWER_USAGE{gpu="0"} 300\n') is None


def test_energy_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"energy\.source dcgm needs energy\.dcgm_url"):
        load_settings(energy={"source": "dcgm"})
    with pytest.raises(ConfigError, match=r"energy\.source"):
        load_settings(energy={"source": "solar"})
    with pytest.raises(ConfigError, match=r"energy\.dcgm_url"):
        load_settings(energy={"source": "dcgm", "dcgm_url": "gpu-node:9400"})
    with pytest.raises(ConfigError, match=r"energy\.grid_kg_per_kwh"):
        load_settings(energy={"grid_kg_per_kwh": -1})
    assert load_settings(energy={"source": "off"}).energy.source == "off"


def test_bench_reads_the_servers_energy_by_source() -> None:
    from sovllm.bench.energy import parse, predicted_per_token, summarise
    from sovllm.bench.record import RequestRecord

    text = (
        "# TYPE sovllm:energy_joules_total counter\n"
        'sovllm:energy_joules_total{model="m",source="measured:rapl",tenant="a"} 10.0\n'
        'sovllm:energy_joules_total{model="m",source="measured:rapl",tenant="b"} 5.0\n'
        'sovllm:energy_joules_total{model="m",source="estimated",tenant="a"} 1.0\n'
        'sovllm:prompt_tokens_total{model_name="m"} 99.0\n'
    )
    assert parse(text) == {"measured:rapl": 15.0, "estimated": 1.0}
    records = [RequestRecord(i, 0.0, 6, output_tokens=n) for i, n in enumerate((6, 4, None))]
    got = summarise(
        {"measured:rapl": 15.0, "estimated": 1.0},
        {"measured:rapl": 35.0, "estimated": 1.0},
        records,
    )
    assert got == {
        "joules": 20.0,
        "output_tokens": 10,
        "joules_per_output_token": 2.0,
        "sources": ["measured:rapl"],
    }
    assert summarise(None, None, records) is None
    assert predicted_per_token(100.0, 2, 150.0) == pytest.approx(100 * 0.75 * 2 / 150)
    assert predicted_per_token(100.0, 1, None) is None


class _Exporter:
    """A DCGM exporter stand-in on loopback: real HTTP, exposition text the test sets."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mj = [1_000_000.0, 2_000_000.0]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = "".join(
                    f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="{i}"}} {v}\n'
                    for i, v in enumerate(outer.mj)
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_dcgm_reader_scrapes_an_exporter_in_its_own_thread() -> None:
    from sovllm.observability.energy.counters import DcgmCounter
    from tests.conftest import wait_until

    exporter = _Exporter()
    counter = DcgmCounter(exporter.url, poll_s=0.05)
    try:
        assert counter.source == "measured:dcgm" and counter.read() == 0.0
        exporter.mj = [1_250_000.0, 2_500_000.0]  # 250 J and 500 J more
        wait_until(lambda: counter.read() == pytest.approx(750.0), "the next scrape", 10)
    finally:
        counter.close()
        exporter.server.shutdown()


def test_a_dcgm_url_outside_the_egress_allow_list_stops_the_start() -> None:
    from sovllm.serve.energy import open_energy
    from sovllm.serve.replicas import PoolConfigError

    settings = load_settings(energy={"source": "dcgm", "dcgm_url": "http://8.8.8.8:9400/metrics"})
    with pytest.raises(PoolConfigError, match=r"invalid setting 'energy\.dcgm_url'"):
        open_energy(settings)
