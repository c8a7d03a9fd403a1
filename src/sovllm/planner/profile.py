"""The `cpu-local` hardware profile: this machine's measured llama.cpp token rates."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sovllm.planner.errors import PlannerError
from sovllm.planner.specs import Hardware

PROFILE_NAME = "cpu-local"
SCHEMA_VERSION = 1


class RateSampleLike(Protocol):
    @property
    def batch(self) -> int: ...
    @property
    def prefill_tokens_per_s(self) -> float: ...
    @property
    def decode_tokens_per_s(self) -> float: ...


def profile_path(data_dir: Path | None = None) -> Path:
    if data_dir is None:
        from sovllm.config import ConfigError, load_settings

        try:
            data_dir = load_settings().data_dir
        except ConfigError as exc:
            raise PlannerError(str(exc)) from None
    return data_dir / "profiles" / f"{PROFILE_NAME}.json"


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


def build_profile(
    samples: Sequence[RateSampleLike],
    model: str,
    threads: int | None,
    power_w: float | None = None,
    memory_gb: float | None = None,
) -> dict[str, Any]:
    rows = sorted(samples, key=lambda s: s.batch)
    if not rows:
        raise PlannerError("calibration produced no samples")
    seen: set[int] = set()
    for s in rows:
        if s.batch < 1 or s.batch in seen:
            raise PlannerError(f"calibration sample with bad or repeated batch {s.batch}")
        if s.prefill_tokens_per_s <= 0 or s.decode_tokens_per_s <= 0:
            raise PlannerError(f"calibration sample at batch {s.batch} has a rate <= 0")
        seen.add(s.batch)
    cores = threads or os.cpu_count() or 1
    return {
        "schema_version": SCHEMA_VERSION,
        "name": PROFILE_NAME,
        "kind": "cpu",
        "model": model,
        "threads": cores,
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(memory_gb if memory_gb is not None else _ram_gb(), 2),
        # No meter here: an assumed ~10 W per busy core unless given.
        "power_w": power_w if power_w is not None else 10.0 * cores,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rates": [
            {
                "batch": s.batch,
                "prefill_tokens_per_s": round(s.prefill_tokens_per_s, 3),
                "decode_tokens_per_s": round(s.decode_tokens_per_s, 3),
            }
            for s in rows
        ],
    }


def save_profile(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a crash mid-write never leaves half a profile
    return path


def hardware_from_profile(doc: dict[str, Any], source: str) -> Hardware:
    try:
        rates = tuple(
            (int(r["batch"]), float(r["prefill_tokens_per_s"]), float(r["decode_tokens_per_s"]))
            for r in doc["rates"]
        )
        if not rates:
            raise ValueError("no rates")
        return Hardware(
            name=PROFILE_NAME,
            memory_gb=float(doc["memory_gb"]),
            bandwidth_gbs=1.0,
            bf16_tflops=1.0,
            fp8_tflops=None,
            interconnect="none",
            link_gbs=1.0,
            link_latency_s=0.0,
            tdp_w=float(doc["power_w"]),
            price_usd=0.0,
            cloud_usd_per_hour=0.0,
            source=source,
            date=str(doc.get("measured_at", "")),
            rates=rates,
            kind="cpu",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlannerError(
            f"profile {source} is malformed ({exc}); rerun `sovllm plan calibrate`"
        ) from None


def load_cpu_hardware(path: Path | None = None) -> Hardware:
    path = path or profile_path()
    if not path.exists():
        raise PlannerError(f"no cpu-local profile at {path}; run `sovllm plan calibrate` first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlannerError(f"cannot read {path}: {exc}") from None
    return hardware_from_profile(doc, str(path))
