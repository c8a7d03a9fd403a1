"""Incidents (AI Act Art. 73) and clock evidence (ISO/IEC 27001 A.8.17) on the real server and
model, on SQLite and PostgreSQL: the CLI and the admin API, the audit entries, the deadline
metric, the report for the authority, and a clean `audit verify` after all of it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from sovllm.governance.incidents import DAY_S
from sovllm.observability.clock import read_clock
from tests.conftest import MODEL_ID, Server, fresh_database_url, run_server, wait_until


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"incidents-{request.param}")
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    url = fresh_database_url(request.param, tmp, postgres)
    with run_server(tmp, env={"SOVLLM_DATABASE_URL": url}) as server:
        yield server


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **(server.env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def entries(server: Server, prefix: str) -> list[dict[str, object]]:
    rows = server.admin("GET", "/audit/entries", params={"limit": 1000}).json()["data"]
    return [r["entry"] for r in reversed(rows) if str(r["entry"]["kind"]).startswith(prefix)]


def series(server: Server, name: str) -> dict[str, float]:
    """A gauge's series by their label text, from /metrics."""
    text = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith(f"sovllm:{name}{{") or line.startswith(f"sovllm:{name} "):
            labels, value = line.rsplit(" ", 1)
            found[labels.removeprefix(f"sovllm:{name}")] = float(value)
    return found


def test_the_clock_is_recorded_at_start_up(srv: Server) -> None:
    here = read_clock()  # the same kernel as the server's
    assert here.source == "adjtimex"  # what works on Linux, in a container too
    found = [e for e in entries(srv, "clock.") if e["trigger"] == "start"]
    assert len(found) == 1, found
    entry = found[0]
    assert entry["kind"] == "clock.sync" and entry["actor"] == {"job": "clock"}
    assert entry["source"] == "adjtimex" and entry["synchronized"] is here.synchronized
    assert isinstance(entry["max_error_s"], float) and entry["max_error_s"] >= 0
    assert srv.metric("clock_synchronized") == (1.0 if here.synchronized else 0.0)
    assert srv.metric("clock_max_error_seconds") >= 0
    shown = srv.admin("GET", "/clock").json()
    assert shown["synchronized"] is here.synchronized and shown["source"] == "adjtimex"


def test_an_incident_from_opening_to_report(srv: Server, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    aware = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    opened = cli(
        srv, "incident", "open", "--severity", "widespread", "--summary",
        "Answers | leaked another tenant's data", "--aware-at", aware.isoformat(),
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    incident_id = opened.stdout.split()[1]
    due = aware.timestamp() + 2 * DAY_S  # Art. 73(3): two days from awareness
    assert f"report due by {dt.datetime.fromtimestamp(due, dt.UTC).isoformat()}" in opened.stdout

    # The deadline is in /metrics while the report is pending, for the alert (a scrape reads
    # the incidents at most every 5 s: IncidentCollector's ttl_s).
    label = f'{{class="widespread",id="{incident_id}"}}'
    deadline = "incident_report_deadline_timestamp_seconds"
    wait_until(lambda: label in series(srv, deadline), "the deadline series", 30)
    assert series(srv, deadline)[label] == due
    assert series(srv, "incidents_pending_report")['{class="widespread"}'] == 1

    linked = srv.admin("POST", f"/incidents/{incident_id}/links", json={"request_id": answer.id})
    assert linked.status_code == 201, linked.text
    first = int(entries(srv, "incident.open")[-1]["seq"])  # type: ignore[call-overload]
    ranged = cli(srv, "incident", "link", incident_id, "--audit", f"{first}-{first}")
    assert ranged.returncode == 0, ranged.stderr
    assert srv.admin("POST", "/tenants", json={"name": "t-incident"}).status_code == 201
    made = srv.admin("POST", "/stop", json={"scope": "tenant", "target": "t-incident", "reason": "drill"})  # fmt: skip
    assert made.status_code == 200, made.text
    assert srv.admin("POST", "/resume", json={"scope": "tenant", "target": "t-incident"}).is_success
    moved = srv.admin(
        "POST", f"/incidents/{incident_id}/status",
        json={"status": "investigating", "note": "Stopped the tenant; reading the logs"},
    )  # fmt: skip
    assert moved.status_code == 200 and moved.json()["status"] == "investigating"
    reported = cli(srv, "incident", "status", incident_id, "reported", "--note", "Sent to the MSA")
    assert reported.returncode == 0, reported.stderr

    # Reported: the countdown stops and the series goes; the alert cannot fire any more.
    wait_until(lambda: label not in series(srv, deadline), "the deadline series to go", 30)
    shown = srv.admin("GET", f"/incidents/{incident_id}").json()
    assert shown["status"] == "reported" and shown["seconds_left"] is None
    assert [e["action"] for e in shown["events"]] == ["open", "link", "link", "status", "status"]

    # Each change is an audit entry with its actor: the CLI's user, the API's key.
    kinds = [
        (e["kind"], e["actor"]) for e in entries(srv, "incident.") if e["incident"] == incident_id
    ]
    assert [k for k, _ in kinds] == [
        "incident.open", "incident.link", "incident.link", "incident.status", "incident.status",
    ]  # fmt: skip
    assert "cli" in kinds[0][1] and kinds[1][1]["role"] == "admin"  # type: ignore[index,operator]

    out = tmp_path / "report.md"
    exported = cli(srv, "incident", "export", incident_id, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    report = out.read_text()
    begin = next(e for e in entries(srv, "request.begin") if e["request_id"] == answer.id)
    model = begin["model"]
    assert isinstance(model, dict)
    assert f"| {model['id']} | {model['weights_sha256']} |" in report
    assert (
        f"| request.begin | {answer.id} |" in report and f"| request.end | {answer.id} |" in report
    )
    assert "Answers \\| leaked another tenant's data" in report
    assert "AI Act Art. 73(3)" in report
    assert "| oversight.stop |" in report and "| oversight.resume |" in report and "drill" in report
    assert "Stopped the tenant; reading the logs" in report and "Sent to the MSA" in report
    assert "Latest signed checkpoint" in report or "no signed checkpoint" in report
    # Exporting read audit entries: recorded as a read.
    reads = [e for e in entries(srv, "access.read") if e["resource"] == "incident.export"]
    assert reads and reads[-1]["query"] == {"incident": incident_id}

    # The same report through the API, for the console.
    md = srv.admin("GET", f"/incidents/{incident_id}/report")
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert f"# Incident report {incident_id}" in md.text

    closed = cli(srv, "incident", "status", incident_id, "closed", "--note", "Fixed")
    assert closed.returncode == 0, closed.stderr
    verified = cli(srv, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_deadline_per_class_and_what_is_refused(srv: Server) -> None:
    now = time.time()
    made = srv.admin("POST", "/incidents", json={"severity": "death", "summary": "A patient died"})
    assert made.status_code == 201, made.text
    body = made.json()
    # Art. 73(4): ten days from awareness (now, when no aware_at is given).
    assert 10 * DAY_S - 60 < body["seconds_left"] <= 10 * DAY_S
    assert abs(dt.datetime.fromisoformat(body["aware_at"]).timestamp() - now) < 60
    internal = srv.admin("POST", "/incidents", json={"severity": "security", "summary": "Phish"})
    assert internal.json()["report_deadline"] is None and internal.json()["seconds_left"] is None

    bad = srv.admin("POST", "/incidents", json={"severity": "bad", "summary": "x"})
    assert bad.status_code == 400 and "no severity class 'bad'" in bad.json()["error"]["message"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    ahead = srv.admin("POST", "/incidents", json={"severity": "serious", "summary": "x", "aware_at": future})  # fmt: skip
    assert ahead.status_code == 400 and "future" in ahead.json()["error"]["message"]
    missing = srv.admin("POST", "/incidents/inc-nope/status", json={"status": "closed"})
    assert missing.status_code == 404 and "inc-nope" in missing.json()["error"]["message"]
    unknown = srv.admin("POST", f"/incidents/{body['id']}/links", json={"request_id": "chatcmpl-x"})
    assert unknown.status_code == 400 and "no audit entry" in unknown.json()["error"]["message"]
    both = srv.admin("POST", f"/incidents/{body['id']}/links", json={"from_seq": 3})
    assert both.status_code == 400
    beyond = srv.admin("POST", f"/incidents/{body['id']}/links", json={"from_seq": 0, "to_seq": 10**9})  # fmt: skip
    assert beyond.status_code == 400 and "is not one" in beyond.json()["error"]["message"]

    auditor = srv.create_key("t-incident-audit", role="auditor")
    as_auditor = {"Authorization": f"Bearer {auditor}"}
    listed = httpx.get(f"{srv.url}/admin/v1/incidents", headers=as_auditor, timeout=10)
    assert listed.status_code == 200 and body["id"] in [i["id"] for i in listed.json()["data"]]
    refused = httpx.post(
        f"{srv.url}/admin/v1/incidents", headers=as_auditor, timeout=10,
        json={"severity": "serious", "summary": "x"},
    )  # fmt: skip
    assert refused.status_code == 403

    assert srv.admin(
        "POST", f"/incidents/{body['id']}/status", json={"status": "closed"}
    ).is_success
    again = srv.admin("POST", f"/incidents/{body['id']}/status", json={"status": "reported"})
    assert again.status_code == 409 and "closed" in again.json()["error"]["message"]
    # The command line: 2 for input that is wrong, 1 for what the incident's state refuses.
    assert cli(srv, "incident", "open", "--severity", "nope", "--summary", "x").returncode == 2
    assert cli(srv, "incident", "link", body["id"], "--audit", "5").returncode == 2
    assert cli(srv, "incident", "status", body["id"], "reported").returncode == 1
    assert cli(srv, "incident", "show", "inc-nope").returncode == 1
    listing = cli(srv, "incident", "list")
    assert listing.returncode == 0 and body["id"] in listing.stdout
