"""`sovllm models approve|list|revoke`: the signed model allow-list (docs/oversight.md, "Models").

`serve` checks it when `models.allow_list` is `enforce` or `warn` (serve/provenance.py).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from sovllm.cli.common import EXIT_USAGE, ConfigOpt, cli_actor, fail, open_db
from sovllm.config import ConfigError, load_settings
from sovllm.engines.catalog import GGUF_MAGIC
from sovllm.engines.weights import WeightsError, hash_weights
from sovllm.governance.audit import open_audit
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.provenance import allowlist
from sovllm.governance.provenance.evals import latest_eval

models_app = typer.Typer(help="The model allow-list: approved weights.", no_args_is_help=True)


def _log(config: Path | None) -> tuple[AuditLog, Path]:
    db = open_db(config)
    try:
        settings = load_settings(config)
        return open_audit(settings, db), settings.data_dir / "cache"
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _card(folder: Path) -> dict[str, str]:
    """`license` and `base_model` from a Hugging Face model card's front matter, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    found = {}
    for key in ("license", "base_model"):
        m = re.search(rf"^{key}:\s*(\S.*)$", front.group(1), re.M) if front else None
        if m:
            found[key] = m.group(1).strip().strip("'\"")
    return found


def when(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


@models_app.command("approve")
def approve(
    path: Annotated[Path, typer.Argument(help="A weights file (GGUF) or a model folder (vLLM).")],
    name: Annotated[str | None, typer.Option(help="Default: the file or folder name.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Where the weights came from (default: the model card's).")
    ] = None,
    licence: Annotated[
        str | None, typer.Option(help="Their licence (default: the model card's).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Approve although its latest eval is below threshold.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Hash the weights, sign and record the approval (an audit entry)."""
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    if path.is_file():
        with path.open("rb") as fh:  # an empty or random file is no weights to approve
            if fh.read(4) != GGUF_MAGIC:
                raise fail(f"{path} is not a GGUF file")
    card = _card(path) if path.is_dir() else {}
    source = source or card.get("base_model")
    licence = licence or card.get("license")
    if not source or not licence:
        flag = "--source" if not source else "--licence"
        raise typer.BadParameter("required: the model card does not say", param_hint=flag)
    log, cache = _log(config)
    try:
        weights = hash_weights(path, cache)
    except WeightsError as exc:
        raise fail(str(exc)) from None
    forced = None
    ev = latest_eval(log.db, weights.sha256)
    if ev is not None and not ev.get("passed", False):
        below = ", ".join(
            f"{k} {ev['scores'].get(k, 0):.2f} < {ev['thresholds'][k]:.2f}"
            for k in ev.get("below_threshold", [])
        )
        what = f"its latest eval (suite {ev.get('suite')} v{ev.get('suite_version')}, entry "
        what += f"#{ev['seq']}) is below threshold: {below}"
        if not force:
            raise fail(f"{path} (sha256 {weights.sha256}): {what}; --force approves it anyway")
        forced = {"entry": ev["seq"], "below_threshold": ev.get("below_threshold", [])}
    try:
        made = allowlist.approve(
            log, weights, name or path.stem, source, licence, cli_actor(), forced
        )
    except allowlist.AllowListError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    typer.echo(f"approved {made.name}: sha256 {made.sha256} ({made.kind}, {path})")
    for rel, digest in sorted(made.files.items()):
        typer.echo(f"  {digest}  {rel}")


def _status(v: allowlist.Verified) -> str:
    if v.problem is not None:
        return f"TAMPERED: {v.problem}"
    return "approved" if v.approval.active else f"revoked {when(v.approval.revoked_at)}"


def _as_json(v: allowlist.Verified) -> dict[str, Any]:
    a = v.approval
    return {
        "sha256": a.sha256,
        "kind": a.kind,
        "name": a.name,
        "source": a.source,
        "licence": a.licence,
        "files": a.files,
        "approved_by": a.approved_by,
        "approved_at": when(a.approved_at),
        "revoked_by": a.revoked_by,
        "revoked_at": when(a.revoked_at) or None,
        "status": _status(v),
        "verified": v.problem is None,
    }


@models_app.command("list")
def list_models(
    output: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    config: ConfigOpt = None,
) -> None:
    """The allow-list, each row's signature checked; exits 1 if any row was tampered with."""
    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--format")
    log, _ = _log(config)
    found = allowlist.listing(log)
    missing = [
        f"{sha}: approved in the audit log, but its row was deleted" for sha in found.missing
    ]
    if output == "json":
        body = {"models": [_as_json(v) for v in found.rows], "problems": missing}
        typer.echo(json.dumps(body, indent=2))
    else:
        for v in found.rows:
            a, by = v.approval, v.approval.approved_by
            who = by.get("cli") or by.get("key_id") or json.dumps(by)
            typer.echo(
                f"{a.sha256}  {a.name}  [{a.kind}]  source: {a.source}  licence: {a.licence}  "
                f"approved by {who} {when(a.approved_at)} UTC  {_status(v)}"
            )
        if not found.rows:
            typer.echo("the model allow-list is empty")
        for line in missing:
            typer.echo(f"TAMPERED: {line}")
    if not found.ok:
        raise typer.Exit(1)


@models_app.command("revoke")
def revoke(
    sha256: Annotated[str, typer.Argument(help="The approved weights' SHA-256.")],
    config: ConfigOpt = None,
) -> None:
    """Take weights off the allow-list (an audit entry); gateways refuse them at their next start."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise typer.BadParameter("not a SHA-256 (64 lowercase hex digits)", param_hint="SHA256")
    log, _ = _log(config)
    try:
        made = allowlist.revoke(log, sha256, cli_actor())
    except allowlist.AllowListError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"revoked {made.name}: sha256 {made.sha256}")


def allowlist_problems(log: AuditLog) -> list[str]:
    """For `audit verify`: each tampered allow-list row, one line each."""
    found = allowlist.listing(log)
    lines = [f"model allow-list {v.approval.sha256}: {v.problem}" for v in found.rows if v.problem]
    lines += [
        f"model allow-list {sha}: approved in the log, its row deleted" for sha in found.missing
    ]
    return lines
