"""The meter the `energy:` settings ask for (docs/observability.md, "Energy")."""

from __future__ import annotations

import logging

from sovllm.observability.energy.counters import (
    DcgmCounter,
    EnergyCounter,
    EnergyUnavailable,
    EstimatedCounter,
    NvmlCounter,
    RaplCounter,
)
from sovllm.observability.energy.meter import EnergyMeter
from sovllm.observability.energy.settings import EnergySettings
from sovllm.planner.catalog import get_hardware
from sovllm.planner.errors import PlannerError

log = logging.getLogger("sovllm.energy")


def estimated(settings: EnergySettings) -> EstimatedCounter:
    try:
        hw = get_hardware(settings.hardware)
    except PlannerError as exc:
        raise EnergyUnavailable(f"energy.hardware: {exc}") from None
    return EstimatedCounter(hw.tdp_w, hw.kind, settings.devices, settings.idle_fraction)


def counter(settings: EnergySettings) -> EnergyCounter | None:
    """The counter `energy.source` names; raises EnergyUnavailable saying why it cannot be
    read. `auto` takes the first that can (NVML, RAPL, the estimate), or none."""
    source = settings.source
    if source == "off":
        return None
    if source == "rapl":
        return RaplCounter(settings.rapl_root)
    if source == "nvml":
        return NvmlCounter()
    if source == "dcgm":
        assert settings.dcgm_url is not None  # the settings' validator
        return DcgmCounter(settings.dcgm_url, settings.dcgm_poll_s)
    if source == "estimated":
        return estimated(settings)
    tried = []
    for make in (NvmlCounter, lambda: RaplCounter(settings.rapl_root), lambda: estimated(settings)):
        try:
            return make()
        except EnergyUnavailable as exc:
            tried.append(str(exc))
    log.warning("energy: no counter can be read (%s); no energy is recorded", "; ".join(tried))
    return None


def meter(settings: EnergySettings) -> EnergyMeter:
    made = counter(settings)
    if made is not None:
        log.info("energy: counting with %s", made.source)
    return EnergyMeter(made, settings.grid_kg_per_kwh)
