"""`sovllm plan size --from-usage`: the traffic this service recorded, read and printed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from sovllm.planner.cli.common import bad
from sovllm.planner.errors import PlannerError

if TYPE_CHECKING:
    from sovllm.planner.traffic import Traffic


def recorded_traffic(
    since: str | None, growth: str, config: Path | None, given: Mapping[str, object]
) -> tuple[Traffic, float]:
    """The traffic recorded in this service's database, opened as `sovllm usage` opens it.
    `given` holds the flags that --from-usage replaces; none may be set."""
    from sovllm.cli.common import open_db
    from sovllm.planner.traffic import parse_growth, parse_since, read_traffic

    for flag, value in given.items():
        if value is not None:
            bad(flag, "--from-usage takes it from the recorded traffic; leave it out")
    try:
        factor = parse_growth(growth)
    except ValueError as exc:
        bad("--growth", str(exc))
    day = None
    if since is not None:
        try:
            day = parse_since(since)
        except ValueError as exc:
            bad("--since", str(exc))
    db = open_db(config)
    try:
        return read_traffic(db, day), factor
    except PlannerError as exc:
        bad("--from-usage", str(exc))
    finally:
        db.dispose()


def print_traffic(t: Traffic, growth: float, users: int, replay: bool, console: Console) -> None:
    from sovllm.planner.traffic import traffic_json

    doc = traffic_json(t, growth, users, replay)
    peak = doc["peak"]
    sized = (
        f"Replayed: the peak hour's {t.peak_requests} requests as recorded, arriving "
        f"{growth:g}x as fast ({doc['sized_for_requests_per_hour']:g} requests/hour)."
        if replay
        else f"Sized for x{growth:g}: {users} users, "
        f"{doc['sized_for_requests_per_hour']:g} requests/hour; prompts {doc['prompt_tokens']}, "
        f"outputs {doc['output_tokens']} tokens."
    )
    console.print(
        f"Recorded traffic {doc['first_arrival']} to {doc['last_arrival']}"
        + (f" (since {doc['since']})" if doc["since"] else "")
        + f": {doc['requests']} requests read, {t.pruned} pruned past retention skipped "
        f"(usage tables: {t.usage_requests} requests). Peak hour from {peak['start']}: "
        f"{t.peak_requests} requests, {t.peak_users} users, think time "
        f"{peak['think_time_s']:g} s. {sized}"
    )
