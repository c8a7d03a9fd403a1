"""Energy per request, tenant and model (docs/observability.md, "Energy")."""

from sovllm.observability.energy.meter import Energy, EnergyMeter, disabled

__all__ = ["Energy", "EnergyMeter", "disabled"]
