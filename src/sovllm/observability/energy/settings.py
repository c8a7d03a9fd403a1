"""The `energy:` section of sovllm's configuration (docs/observability.md, "Energy").

Here rather than in `sovllm.config`, so the energy package depends on nothing above it; the
configuration imports this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["auto", "rapl", "nvml", "dcgm", "estimated", "off"]


class EnergySettings(BaseModel):
    """Energy per request, tenant and model: which counter is read, and the grid's carbon."""

    model_config = ConfigDict(extra="forbid")

    source: Source = Field(
        "auto",
        description="auto: NVML where a GPU and nvidia-ml-py are present, else RAPL where "
        "readable, else the estimate; rapl, nvml, dcgm, estimated: that one (start-up fails "
        "when it cannot be read); off: no energy is recorded.",
    )
    rapl_root: Path = Field(
        Path("/sys/class/powercap"),
        description="Where the intel-rapl:* zones are (their energy_uj files are summed).",
    )
    dcgm_url: str | None = Field(
        None,
        description="DCGM exporter's metrics URL (e.g. http://gpu-node:9400/metrics), for "
        "source dcgm; subject to 'egress_allow'.",
    )
    dcgm_poll_s: float = Field(
        1.0, gt=0, le=60, description="How often the DCGM exporter is scraped."
    )
    grid_kg_per_kwh: float | None = Field(
        None,
        ge=0,
        le=2.0,
        description="The grid's carbon intensity (kg CO2e per kWh), for each request's CO2e; "
        "none: no CO2e is reported (a guessed intensity would read as a fact).",
    )
    hardware: str = Field(
        "cpu-local",
        min_length=1,
        description="For source estimated: the planner's hardware (a GPU of its catalog, or "
        "cpu-local, the measured CPU profile) whose TDP the estimate uses.",
    )
    devices: int = Field(1, ge=1, le=64, description="For the estimate: how many of them.")
    idle_fraction: float = Field(
        0.2,
        ge=0,
        le=1,
        description="For the estimate: idle draw as a fraction of TDP (the catalog has TDP only).",
    )

    @field_validator("dcgm_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("not an http(s) URL: its port is not a number") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host, e.g. http://10.0.0.5:9400/metrics")
        return value

    @model_validator(mode="after")
    def _dcgm_needs_url(self) -> EnergySettings:
        if self.source == "dcgm" and self.dcgm_url is None:
            raise ValueError("energy.source dcgm needs energy.dcgm_url (the exporter's URL)")
        return self
