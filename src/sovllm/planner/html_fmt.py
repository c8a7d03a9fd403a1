"""Formatting shared by the sections of the `plan size` page: escaping, numbers, tables."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

X = "\u00d7"  # the multiplication sign


def esc(x: Any) -> str:
    return html.escape(str(x))


def money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], text_cols: int = 1) -> str:
    """Cells are already escaped; the first `text_cols` columns are text, the others numbers."""
    out = ["<table><tr>", *(f"<th>{h}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = "" if i < text_cols else " class='n'"
            out.append(f"<td{cls}>{cell}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)
