"""`sovllm plan validate`: predictions against the published measurements shipped with sovllm."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from sovllm.planner.cli.common import console, emit_json


def validate(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
    as_labelled: Annotated[
        bool,
        typer.Option(
            "--as-labelled",
            help="Read every row exactly as the CSV labels it (ignore corrections.yaml).",
        ),
    ] = False,
) -> None:
    """Compare predictions with the published measurements shipped with sovllm."""
    from rich.table import Table

    from sovllm.planner.validation import evaluate, summarise

    errors = evaluate(corrected=not as_labelled)
    summary = summarise(errors)
    if as_json:
        emit_json(
            {
                "rows": [
                    {
                        "id": e.row.id,
                        "dataset": e.row.dataset,
                        "metric": e.row.metric,
                        "measured": e.row.value,
                        "predicted": round(e.predicted, 5),
                        "error_pct": round(e.error_pct, 2),
                        "fitted": e.fitted,
                        "read_as": e.read_as,
                        "source": e.row.source,
                    }
                    for e in errors
                ],
                "summary": [asdict(s) for s in summary],
            }
        )
        return
    out = console()
    t = Table(title="Per row")
    for col in ("id", "metric", "measured", "predicted", "error %", "fitted", "read as"):
        t.add_column(col)
    for e in errors:
        t.add_row(
            e.row.id,
            e.row.metric,
            f"{e.row.value:.4g}",
            f"{e.predicted:.4g}",
            f"{e.error_pct:+.1f}",
            "fitted" if e.fitted else "",
            e.read_as,
        )
    out.print(t)
    t = Table(title="Summary (absolute % error)")
    for col in ("data", "metric", "rows", "subset", "median", "max", "worst ratio"):
        t.add_column(col)
    for s in summary:
        t.add_row(
            s.dataset,
            s.group,
            str(s.rows),
            s.subset,
            f"{s.median_abs_pct:.1f}",
            f"{s.max_abs_pct:.1f}",
            f"{s.worst_ratio:.2f}x",
        )
    out.print(t)
