"""GET /admin/v1/usage/energy: joules, kWh and CO2e per tenant and day (the console's energy
chart, `sovllm usage --energy`'s data); an audited read, as the usage it is summed from."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from sovllm.api.admin_common import PREFIX, Auditor, ListOf, audited_read
from sovllm.api.state import app_state
from sovllm.governance.usage import energy_by_tenant_day, usage

router = APIRouter(prefix=PREFIX, tags=["admin"])


class EnergyOut(BaseModel):
    day: str
    """YYYY-MM-DD, or YYYY-MM for a month rolled up past retention."""
    tenant: str
    requests: int
    joules: float
    kwh: float
    co2e_g: float
    source: str
    """measured:rapl|nvml|dcgm, estimated, mixed; empty: none recorded (or rolled up)."""


@router.get("/usage/energy", dependencies=[Auditor])
async def get_energy(
    request: Request,
    tenant: str | None = None,
    since: Annotated[dt.date | None, Query(description="First day, YYYY-MM-DD.")] = None,
) -> ListOf[EnergyOut]:
    rows = await to_thread.run_sync(usage, app_state(request).db, tenant, since)
    sums = energy_by_tenant_day(rows)
    day = since.isoformat() if since else None
    await audited_read(request, "usage.energy", {"tenant": tenant, "since": day}, len(sums))
    return ListOf[EnergyOut](
        data=[
            EnergyOut(
                day=e.day,
                tenant=e.tenant,
                requests=e.requests,
                joules=e.joules,
                kwh=e.kwh,
                co2e_g=e.co2e_g,
                source=e.source,
            )
            for e in sums
        ]
    )
