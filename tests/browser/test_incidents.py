"""The console's incident view in a real browser: an admin opens, links and reports an incident
and downloads its report; an auditor reads only; the clock warning follows the server's clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from playwright.sync_api import Page, expect

from sovllm.observability.clock import read_clock
from tests.browser.pages import sign_in_console
from tests.browser.test_admin import chat_once
from tests.conftest import Server


def test_an_admin_opens_links_and_reports_an_incident(
    page: Page, web: Server, tmp_path: Path
) -> None:
    request_id = chat_once(web, web.api_key)
    sign_in_console(page, web.url, web.api_key)
    panel = page.locator("#panel-incidents")
    expect(panel).to_be_visible()
    expect(page.locator("#nav-panels")).to_contain_text("Incidents")

    # Aware 36 hours ago of a widespread infringement: 12 hours are left of its 2 days.
    aware = dt.datetime.now(dt.UTC) - dt.timedelta(hours=36)
    form = page.locator("#incident-open-form")
    form.get_by_label("Class").select_option("widespread")
    form.get_by_label("Summary").fill("Answers quoted another ward's records")
    form.get_by_label("Aware since (UTC)").fill(aware.strftime("%Y-%m-%dT%H:%M:%S"))
    form.get_by_role("button", name="Open incident").click()
    row = page.locator("#incidents-table tbody tr", has_text="another ward's records")
    expect(row).to_contain_text("widespread")
    expect(row.locator(".left")).to_contain_text(" h ")
    expect(row.locator(".left")).to_have_class("left error")  # under a day: shown as urgent
    incident_id = str(row.get_attribute("data-incident"))
    shown = web.admin("GET", f"/incidents/{incident_id}").json()
    assert 11.9 * 3600 < shown["seconds_left"] < 12 * 3600

    link = page.locator("#incident-link-form")
    link.get_by_label("Incident").select_option(incident_id)
    link.get_by_label("Request id").fill(request_id)
    link.get_by_role("button", name="Link").click()
    expect(page.locator("#incident-result")).to_have_text(f"Linked to {incident_id}.")

    status = page.locator("#incident-status-form")
    status.get_by_label("Incident").select_option(incident_id)
    status.get_by_label("Status").select_option("reported")
    status.get_by_label("What was done").fill("Reported to the authority by phone")
    status.get_by_role("button", name="Set status").click()
    expect(row).to_have_attribute("data-status", "reported")
    expect(row.locator(".left")).to_have_text("reported")

    with page.expect_download() as download:
        row.get_by_role("button", name=f"Report of {incident_id}").click()
    saved = tmp_path / "report.md"
    download.value.save_as(saved)
    report = saved.read_text()
    assert f"# Incident report {incident_id}" in report
    assert f"| request.begin | {request_id} |" in report
    assert "Reported to the authority by phone" in report
    events = web.admin("GET", f"/incidents/{incident_id}").json()["events"]
    assert [e["action"] for e in events] == ["open", "link", "status"]
    assert events[1]["request_id"] == request_id


def test_an_auditor_reads_incidents_without_the_forms(page: Page, web: Server) -> None:
    made = web.admin("POST", "/incidents", json={"severity": "death", "summary": "Audit read"})
    assert made.status_code == 201, made.text
    auditor = web.create_key("web-incident-audit", role="auditor")
    sign_in_console(page, web.url, auditor)
    row = page.locator(f'#incidents-table tr[data-incident="{made.json()["id"]}"]')
    expect(row).to_contain_text("Audit read")
    expect(row.locator(".left")).to_contain_text("days")  # ten days, counting down
    expect(page.locator("#incident-controls")).to_have_count(0)
    expect(row.get_by_role("button", name="Report of")).to_be_visible()


def test_the_console_warns_of_an_unsynchronised_clock(page: Page, web: Server) -> None:
    synced = read_clock().synchronized  # the server's kernel is this one
    sign_in_console(page, web.url, web.api_key)
    warning = page.locator("#clock-warning")
    if synced:
        expect(warning).to_be_hidden()
    else:
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("not known to be synchronised")
    # The same state with the opposite answer from the server flips it.
    page.route(
        "**/admin/v1/clock",
        lambda route: route.fulfill(
            status=200, content_type="application/json",
            body='{"source": "adjtimex", "synchronized": %s, "detail": "drill"}'
            % ("false" if synced else "true"),
        ),
    )  # fmt: skip
    page.reload()
    expect(page.locator("#console")).to_be_visible()
    if synced:
        expect(warning).to_be_visible()
    else:
        expect(warning).to_be_hidden()
