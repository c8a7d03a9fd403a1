"""The energy meter the settings ask for, checked before the service starts: a DCGM exporter
outside loopback and private networks only where `egress_allow` lists it, and a counter named
explicitly that cannot be read stops the start in one line."""

from __future__ import annotations

from sovllm.config import Settings
from sovllm.observability.energy import build
from sovllm.observability.energy.counters import EnergyUnavailable
from sovllm.observability.energy.meter import EnergyMeter
from sovllm.serve.replicas import check_egress


def open_energy(settings: Settings) -> EnergyMeter:
    """Raises EnergyUnavailable or PoolConfigError, each naming the setting."""
    e = settings.energy
    if e.source == "dcgm" and e.dcgm_url is not None:
        setting = "invalid setting 'energy.dcgm_url'"
        check_egress(e.dcgm_url, settings.egress_allow, "energy", subject=setting)
    try:
        return build.meter(e)
    except EnergyUnavailable as exc:
        raise EnergyUnavailable(f"invalid setting 'energy.source' ({e.source}): {exc}") from None
