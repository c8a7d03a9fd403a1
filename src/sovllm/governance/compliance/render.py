"""The evidence pack as one self-contained HTML document (printed to PDF by pdf.py)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from sovllm.governance.compliance.checklist import ROWS, Row
from sovllm.governance.compliance.evidence import Section

STYLE = """
body { font: 10.5pt/1.45 system-ui, sans-serif; color: #111; margin: 2em; }
h1 { font-size: 18pt; margin-bottom: 0; } h2 { font-size: 13pt; margin-top: 1.6em; }
.meta { color: #444; } table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 4px 6px; vertical-align: top; text-align: left; }
th { background: #eee; } code { font-size: 8.5pt; word-break: break-all; }
.ok { color: #11672b; } .missing, .failed { color: #b00020; font-weight: 600; }
pre { white-space: pre-wrap; font-size: 8.5pt; background: #f6f6f6; padding: 6px; }
section { break-inside: avoid; } tr { break-inside: avoid; }
"""

WORDS = {"ok": "evidence", "missing": "no evidence", "failed": "failed"}


def render(
    sections: Mapping[str, Section], meta: Mapping[str, str], rows: tuple[Row, ...] = ROWS
) -> str:
    """The document: the checklist, each row with its tests and its evidence's status, then
    every evidence section in full."""
    head = "".join(f"<div>{escape(k)}: <b>{escape(v)}</b></div>" for k, v in meta.items())
    body = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>sovllm compliance report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>sovllm compliance report</h1>",
        f"<div class='meta'>{head}</div>",
        "<h2>Checklist</h2>",
        "<table><thead><tr><th>Requirement</th><th>Here</th></tr></thead><tbody>",
        *(_summary(r, sections) for r in rows),
        "</tbody></table>",
        "<h2>Requirements, how they are met, and what checks them</h2>",
        *(_row(r, sections) for r in rows),
        "<h2>Evidence from this installation</h2>",
        *(_section(key, s) for key, s in sections.items()),
        "</body></html>",
    ]
    return "\n".join(body)


def status_of(row: Row, sections: Mapping[str, Section]) -> str:
    """A row is met here when every section it names has evidence and none failed."""
    states = [sections[k].status for k in row.evidence]
    if "failed" in states:
        return "failed"
    if not row.tests or "missing" in states:
        return "missing"
    return "ok"


def _summary(row: Row, sections: Mapping[str, Section]) -> str:
    state = status_of(row, sections)
    return (
        f"<tr><td>{escape(row.framework)} {escape(row.ref)}: {escape(row.requirement)}</td>"
        f"<td class='{state}'>{WORDS[state]}</td></tr>"
    )


def _row(row: Row, sections: Mapping[str, Section]) -> str:
    """One requirement as a block (a heading line, then its paragraphs): it reads, and its
    text extracts, in order, where a wide table's narrow cells would interleave."""
    tests = "".join(f"<li><code>{escape(t)}</code></li>" for t in row.tests)
    tests = (
        f"<ul>{tests}</ul>" if tests else "<p class='missing'>No test in the suite checks it.</p>"
    )
    links = ", ".join(
        f"<a href='#{k}' class='{sections[k].status}'>{escape(sections[k].title)}: "
        f"{WORDS[sections[k].status]}</a>"
        for k in row.evidence
    )
    state = status_of(row, sections)
    return (
        f"<section class='req'><h3>{escape(row.framework)} {escape(row.ref)}: "
        f"{escape(row.requirement)} <span class='{state}'>{WORDS[state].upper()}</span></h3>"
        f"<p>{escape(row.how)}</p><p>Checked by:</p>{tests}<p>Evidence here: {links}</p>"
        "</section>"
    )


def _section(key: str, s: Section) -> str:
    facts = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in s.facts
    )
    parts = [
        f"<section id='{escape(key)}'><h3>{escape(s.title)} ",
        f"<span class='{s.status}'>({WORDS[s.status]})</span></h3>",
    ]
    if s.note:
        parts.append(f"<p class='{s.status}'>{escape(s.note)}</p>")
    if facts:
        parts.append(f"<table>{facts}</table>")
    if s.text:
        parts.append(f"<pre>{escape(s.text)}</pre>")
    parts.append("</section>")
    return "".join(parts)
