"""The evidence pack (`sovllm compliance report`): a checklist of GDPR, ISO/IEC 27001 and AI
Act requirements, each with the tests that check it and live evidence from this installation."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from sovllm import __version__
from sovllm.config import Settings
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import CheckpointError
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.compliance.checklist import ROWS
from sovllm.governance.compliance.evidence import collect
from sovllm.governance.compliance.pdf import PdfError, find_chromium, print_pdf
from sovllm.governance.compliance.render import render, status_of

__all__ = ["Made", "PdfError", "make_report"]


@dataclass(frozen=True)
class Made:
    html: Path
    pdf: Path | None
    rows: int
    without_evidence: list[str]
    """The rows (framework and reference) not shown met here."""
    verification_failed: bool
    """The audit log failed the verification the report ran."""


def make_report(
    settings: Settings,
    log: AuditLog,
    out: Path,
    actor: records.Actor,
    pdf: bool = True,
) -> Made:
    """Write `out`/compliance-report.html (and .pdf), then record the report in the audit log
    with its hash. PdfError, after the HTML is written, when no Chromium can print it."""
    # Sign the tree head first: the checkpoint the report shows then covers the whole log
    # as it is now (the command line's log has no writer thread that signs on a schedule).
    # A refusal (the database lost this host's last checkpoint) is the verification's finding.
    with contextlib.suppress(CheckpointError):
        log.checkpoint()
    sections = collect(settings, log)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    meta = {"generated": now, "sovllm": __version__, "database": log.db.backend}
    html = render(sections, meta)
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / "compliance-report.html"
    html_path.write_text(html, encoding="utf-8")
    gaps = [f"{r.framework} {r.ref}" for r in ROWS if status_of(r, sections) != "ok"]
    fields = {
        "actor": dict(actor),
        "sha256": hashlib.sha256(html.encode()).hexdigest(),
        "rows": len(ROWS),
        "without_evidence": gaps,
    }
    log.append(records.COMPLIANCE_REPORT, fields).result()
    pdf_path = None
    if pdf:
        chromium = find_chromium()
        if chromium is None:
            raise PdfError(
                "no Chromium to print the PDF with (install chromium, or set SOVLLM_CHROMIUM; "
                f"--no-pdf writes the HTML alone): {html_path} is written"
            )
        pdf_path = out / "compliance-report.pdf"
        print_pdf(html_path, pdf_path, chromium)
    failed = sections["verification"].status == "failed"
    return Made(html_path, pdf_path, len(ROWS), gaps, failed)
