"""`sovllm bench --soak`: check its flags, make the soak's tenant and its users' key, and judge.

The users chat under a tenant made for the run (`soak-<hex>`), so that its usage can be
reconciled with the audit log whatever else the server serves."""

from __future__ import annotations

import math
import secrets
from typing import Any

import httpx
from rich.console import Console

from sovllm.bench.client import _root
from sovllm.bench.soak import SoakPlan
from sovllm.planner.workload import Load


class SoakSetupError(Exception):
    """The server refused to set the soak up (a bad key, an unreachable URL)."""


def check_flags(load: Load, sweep: bool, capacity: bool, **periods: float) -> str | None:
    """What is wrong with the flags for a soak, naming the flag; None when they fit."""
    if load.kind != "users":
        return "--soak runs the closed-loop chat users: give --users, not another load"
    if sweep or capacity:
        return "--soak is one long run: it cannot be combined with --sweep or --capacity"
    for flag, value in periods.items():
        if not math.isfinite(value) or value <= 0:
            return f"--{flag.replace('_', '-')} must be above 0, got {value:g}"
    return None


def prepare(
    url: str,
    admin_key: str,
    periods: dict[str, float],
    server_pid: int | None,
) -> tuple[SoakPlan, str]:
    """A new tenant and a `user` key in it for the chat users; the plan for the admin actor.
    `periods`: the flags checked by `check_flags`, by name (sample_every, admin_every,
    key_every, stop_every, stop_hold), in seconds."""
    tenant = f"soak-{secrets.token_hex(4)}"
    admin = f"{_root(url)}/admin/v1"
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        with httpx.Client(headers=headers, timeout=60.0) as http:
            made = http.post(f"{admin}/tenants", json={"name": tenant})
            if made.status_code != 201:
                raise SoakSetupError(
                    f"{admin}/tenants answered HTTP {made.status_code} to the admin key: "
                    f"{made.text[:300]}"
                )
            body = {"tenant": tenant, "role": "user", "name": "sovllm bench --soak users"}
            key = http.post(f"{admin}/keys", json=body)
            if key.status_code != 201:
                raise SoakSetupError(f"{admin}/keys answered HTTP {key.status_code}: {key.text}")
    except httpx.HTTPError as exc:
        raise SoakSetupError(f"cannot reach {admin}: {exc}") from None
    plan = SoakPlan(
        admin_key=admin_key,
        tenant=tenant,
        tenant_created_at=float(made.json()["created_at"]),
        sample_every_s=periods["sample_every"],
        admin_every_s=periods["admin_every"],
        key_every_s=periods["key_every"],
        stop_every_s=periods["stop_every"],
        stop_hold_s=periods["stop_hold"],
        server_pid=server_pid,
    )
    return plan, str(key.json()["key"])


def verdict(console: Console, soak: dict[str, Any] | None) -> bool:
    """Print the soak's figures and targets; True when every target is met."""
    if soak is None:
        console.print("[red]soak: the run ended before the soak could be judged[/]")
        return False
    from sovllm.bench.soak_report import print_soak

    print_soak(console, soak)
    return bool(soak["met"])
