"""`sovllm compliance report`: the evidence pack, read back from its PDF with pdftotext."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.governance.compliance.checklist import ROWS
from sovllm.store.db import Database
from tests.unit.test_admin_cli import sovllm

ROOT = Path(__file__).resolve().parents[2]


def pdf_text(pdf: Path) -> str:
    """The PDF's text with its line breaks and hyphenless wraps folded into single spaces."""
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.fail("pdftotext is missing: scripts/test.sh installs Debian's poppler-utils")
    done = subprocess.run([pdftotext, str(pdf), "-"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return re.sub(r"\s+", " ", done.stdout)


@pytest.fixture
def env(tmp_path: Path, database_url_any: str) -> dict[str, str]:
    return {
        "SOVLLM_DATA_DIR": str(tmp_path / "data"),
        "SOVLLM_DATABASE_URL": database_url_any,
        "SOVLLM_COMPLIANCE__CONTROLLER": "Ward Hospital, 1 Main Street",
        "SOVLLM_COMPLIANCE__DPO_CONTACT": "dpo@ward.example",
    }


def entries(url: str, kind: str) -> list[dict[str, object]]:
    with Database(url).read() as s:
        rows = s.execute(
            text("SELECT body FROM audit_entries WHERE kind = :k ORDER BY seq"), {"k": kind}
        ).all()
    return [json.loads(body) for (body,) in rows]


def test_every_row_is_in_the_pdf_with_its_live_evidence(
    env: dict[str, str], database_url_any: str, tmp_path: Path
) -> None:
    assert sovllm(env, "keys", "create", "--tenant", "ward", "--role", "admin").returncode == 0
    assert sovllm(env, "stop", "--all", "--reason", "drill").returncode == 0
    assert sovllm(env, "resume", "--all").returncode == 0
    out = tmp_path / "pack"
    done = sovllm(env, "compliance", "report", "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = (out / "compliance-report.html").read_text()
    words = pdf_text(out / "compliance-report.pdf")
    for row in ROWS:
        assert f"{row.framework} {row.ref}" in words, row.ref
        assert row.requirement in words, row.ref
    # Live evidence, not boilerplate: the verification run now, the drill's stop.
    assert re.search(r"verified now OK: \d+ entries", words), words
    assert "oversight.stop" in words and "reason drill" in words
    assert "content 30 days" in words and "Ward Hospital" in words
    assert "nothing deleted under retention yet" in words  # a fresh log: nothing was due
    # What this installation has no evidence of says so, in red.
    assert "no incident recorded in the audit log" in words
    assert "class='missing'>NO EVIDENCE" in html and "<td class='missing'>no evidence" in html
    met = [r for r in ROWS if f"{r.framework} {r.ref}" not in done.stdout]
    assert any(r.ref == "Art. 30" for r in met) and any(r.ref == "A.8.15" for r in met)
    # The report itself is an entry, with the hash of what was written.
    [made] = entries(database_url_any, "compliance.report")
    assert made["sha256"] == hashlib.sha256(html.encode()).hexdigest()
    assert set(made["actor"]) == {"cli", "host"}  # type: ignore[arg-type]


def test_a_tampered_log_fails_the_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sovllm.db'}"
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "SOVLLM_DATABASE_URL": url}
    assert sovllm(env, "keys", "create", "--tenant", "ward", "--role", "admin").returncode == 0
    with sqlite3.connect(tmp_path / "sovllm.db") as conn:
        conn.execute("UPDATE audit_entries SET body = replace(body, 'ward', 'wart') WHERE seq = 1")
    out = tmp_path / "pack"
    done = sovllm(env, "compliance", "report", "--out", str(out), "--no-pdf")
    assert done.returncode == 1 and "failed verification" in done.stderr, done.stderr
    assert not (out / "compliance-report.pdf").exists()
    html = (out / "compliance-report.html").read_text()
    assert "class='failed'>FAILED" in html and "FAILED; first bad entry: 1" in html


def test_bad_output_folders_are_named(tmp_path: Path) -> None:
    env = {"SOVLLM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "500"}  # no wrapped message
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = sovllm(env, "compliance", "report", "--out", str(afile))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr
    no_browser = {**env, "SOVLLM_CHROMIUM": str(tmp_path / "no-such-chromium")}
    done = sovllm(no_browser, "compliance", "report", "--out", str(tmp_path / "p"))
    assert done.returncode == 1 and "no-such-chromium" in done.stderr
    assert (tmp_path / "p" / "compliance-report.html").is_file()  # the HTML is kept


def test_every_test_a_row_names_exists() -> None:
    """The checklist's "checked by" column is true: each named test is in the suite."""
    for row in ROWS:
        for node in row.tests:
            path, _, name = node.partition("::")
            source = (ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), node
