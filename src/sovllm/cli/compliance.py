"""`sovllm compliance records|report`: compliance documents from the live installation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sovllm.cli.common import EXIT_USAGE, ConfigOpt, cli_actor, fail, open_db, record_read
from sovllm.config import ConfigError, load_settings
from sovllm.governance.audit import open_audit
from sovllm.governance.compliance import PdfError, make_report
from sovllm.governance.records import record_of_processing, to_markdown

compliance_app = typer.Typer(
    help="Compliance documents from the live configuration.", no_args_is_help=True
)


@compliance_app.command("records")
def compliance_records(
    output: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    config: ConfigOpt = None,
) -> None:
    """Print the GDPR Art. 30 record of processing built from the configuration and the
    tenants' content policies in the database."""
    if output not in {"md", "json"}:
        raise typer.BadParameter("must be md or json", param_hint="--format")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    db = open_db(config)
    record = record_of_processing(settings, db)
    # Reading the record is an audited access (`access.read`).
    record_read(config, db, "records.art30", {"format": output}, 1)
    typer.echo(json.dumps(record, indent=2) if output == "json" else to_markdown(record))


@compliance_app.command("report")
def compliance_report(
    out: Annotated[Path, typer.Option("--out", help="Folder for the HTML and the PDF.")],
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Print a PDF too.")] = True,
    config: ConfigOpt = None,
) -> None:
    """The evidence pack: GDPR, ISO/IEC 27001 and AI Act requirements, how sovllm meets each,
    the tests that check it, and live evidence from this installation (the audit log verified
    now, the latest checkpoint, retention, stops, reviews, incidents, evaluations, the model
    allow-list, keys and roles, the Art. 30 record). Rows without evidence are printed in red.
    Exit 1 when the audit log fails verification."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file, not a folder", param_hint="--out")
    try:
        settings = load_settings(config)
        log = open_audit(settings, open_db(config))
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        made = make_report(settings, log, out, cli_actor(), pdf=pdf)
    except PdfError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the report to {out}: {exc}") from None
    typer.echo(f"wrote {made.html}" + (f" and {made.pdf}" if made.pdf else ""))
    typer.echo(f"{made.rows} requirements, {len(made.without_evidence)} without full evidence:")
    for gap in made.without_evidence:
        typer.echo(f"  {gap}")
    if made.verification_failed:
        raise fail("the audit log failed verification: see the report's evidence")
