"""The admin console in a real browser: admins manage keys, auditors check the log."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.pages import (
    long_answer,
    send,
    sign_in_chat,
    sign_in_console,
    wait_answered,
)
from tests.conftest import MODEL_ID, Server


def chat_once(web: Server, key: str) -> str:
    r = httpx.post(
        f"{web.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
              "max_tokens": 8, "temperature": 0},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_an_admin_creates_a_key_and_it_works_in_the_chat(
    context: BrowserContext, page: Page, web: Server
) -> None:
    sign_in_console(page, web.url, web.api_key)
    form = page.locator("#tenant-form")
    form.get_by_label("Name").fill("web-console")
    form.get_by_label("Requests/min").fill("30")
    page.click("#tenant-submit")
    tenant = page.locator('#tenants-table tr[data-tenant="web-console"]')
    expect(tenant).to_contain_text("30")

    keys = page.locator("#key-form")
    keys.get_by_label("Tenant").select_option("web-console")
    keys.get_by_label("Role").select_option("user")
    keys.get_by_label("Name").fill("nurse-station")
    page.click("#key-submit")
    shown = page.locator("#new-key-value")
    expect(shown).to_have_text(re.compile(r"^sk-sovllm-\S+$"))
    key = shown.inner_text()
    assert key.startswith("sk-sovllm-")
    row = page.locator("#keys-table tr", has_text="nurse-station")
    expect(row).to_contain_text("web-console")
    expect(row).to_contain_text("active")
    # Shown once: dismissed, it is gone from the page.
    page.click("#hide-key")
    expect(page.locator("#new-key")).to_be_hidden()
    assert key not in page.content()
    assert key not in page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")

    chat = context.new_page()  # a new tab: its own session storage
    sign_in_chat(chat, web.url, key)
    expect(chat.locator("#who")).to_have_text("web-console · user")
    send(chat, "Say hello.")
    answer = wait_answered(chat)
    expect(answer).to_have_attribute("data-ai-generated", "true")


def test_an_admin_sets_quotas_and_revokes_a_key(page: Page, web: Server) -> None:
    web.create_key("web-revoke")
    listed = web.admin("GET", "/keys", params={"tenant": "web-revoke"}).json()["data"]
    key_id = listed[0]["id"]
    sign_in_console(page, web.url, web.api_key)
    row = page.locator(f'#keys-table tr[data-key-id="{key_id}"]')
    row.get_by_role("button", name="Quotas").click()
    form = page.locator("#key-form")
    form.get_by_label("Requests/min").fill("7")
    form.get_by_label("Tokens/month").fill("100000")
    page.click("#key-submit")
    expect(row).to_contain_text("100,000")
    assert (
        web.admin("GET", "/keys", params={"tenant": "web-revoke"}).json()["data"][0]["limits"][
            "rpm"
        ]
        == 7
    )
    revoke = row.get_by_role("button", name="Revoke")
    revoke.click()
    expect(revoke).to_have_text("Confirm revoke")
    revoke.click()
    expect(row).to_contain_text("revoked")
    assert web.admin("GET", "/keys", params={"tenant": "web-revoke"}).json()["data"][0][
        "revoked_at"
    ]


def test_an_auditor_verifies_the_log_and_downloads_a_checkpoint(page: Page, web: Server) -> None:
    auditor = web.create_key("web-audit", role="auditor")
    sign_in_console(page, web.url, auditor)
    # Admin-only panels are absent for an auditor, not dead buttons.
    expect(page.locator("#panel-tenants")).to_be_hidden()
    expect(page.locator("#panel-keys")).to_be_hidden()
    expect(page.locator("#panel-verify")).to_be_visible()

    page.get_by_role("button", name="Verify now").click()
    result = page.locator("#verify-last")
    expect(result).to_have_attribute("data-ok", "true")
    expect(result).to_contain_text("The log verifies")
    expect(result).to_contain_text("entries")
    page.reload()
    expect(page.locator("#verify-last")).to_contain_text("last verified")
    # The server keeps the result, in the audit log: any console, any browser, shows it.
    last = web.admin("GET", "/audit/verify/last").json()
    assert last["ok"] is True and last["actor"]["tenant"] == "web-audit"
    expect(page.locator("#verify-last")).to_contain_text("web-audit (auditor)")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download latest signed checkpoint").click()
    note = Path(download.value.path()).read_text()
    lines = note.splitlines()
    assert lines[0] == "sovllm" and lines[1].isdigit() and "— sovllm " in note
    assert download.value.suggested_filename == f"checkpoint-{lines[1]}.txt"


def test_an_auditor_searches_the_log(page: Page, web: Server) -> None:
    key = web.create_key("web-search")
    request_id = chat_once(web, key)
    auditor = web.create_key("web-audit-2", role="auditor")
    sign_in_console(page, web.url, auditor)
    form = page.locator("#audit-form")
    form.get_by_label("Request id").fill(request_id)
    form.get_by_role("button", name="Search").click()
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("request.end")
    expect(rows.nth(1)).to_contain_text("request.begin")
    expect(rows.nth(1)).to_contain_text("web-search")

    form.get_by_label("Request id").fill("")
    form.get_by_label("Tenant").fill("web-search")
    form.get_by_role("button", name="Search").click()
    expect(page.locator("#audit-count")).to_contain_text("1 entry")


def test_erasing_a_subject_gives_a_signed_receipt(page: Page, web: Server) -> None:
    sign_in_console(page, web.url, web.api_key)
    page.locator("#erase-subject").fill("mario.rossi@example.com")
    page.click("#erase-submit")
    expect(page.locator("#erase-question")).to_contain_text("mario.rossi@example.com")
    page.click("#erase-yes")
    receipt = page.locator("#erase-receipt-json")
    expect(receipt).to_contain_text('"signature"')
    expect(receipt).to_contain_text('"verifier_key"')
    with page.expect_download() as download:
        page.click("#download-receipt")
    assert '"signature"' in Path(download.value.path()).read_text()


def test_usage_and_latency(page: Page, web: Server, shots: Path) -> None:
    key = web.create_key("web-usage")
    chat_once(web, key)
    sign_in_console(page, web.url, web.api_key)
    bars = page.locator('#usage-chart rect.bar[data-series="web-usage"]')
    expect(bars).to_have_count(1)
    expect(page.locator("#usage-legend")).to_contain_text("web-usage")
    expect(page.locator("#usage-table tbody tr", has_text="web-usage")).to_have_count(1)
    # TTFT and ITL percentiles from the server's own histograms.
    for metric in ("ttft-p50", "ttft-p95", "itl-p50", "itl-p95"):
        total = page.locator(f'#latency-table tr[data-metric="{metric}"] .total')
        expect(total).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
    # The next poll subtracts the first: the window's count appears.
    expect(page.locator('#latency-table tr[data-metric="requests"] .window')).not_to_have_text(
        "—", timeout=20_000
    )
    # Each key's age, from the same scrape (sovllm:key_age_seconds): all three were written at
    # the server's first start, so each is a fraction of a day old.
    for name in ("signing", "master", "pseudonym"):
        age = page.locator(f'#key-ages tr[data-key="{name}"] td.num')
        expect(age).to_have_text(re.compile(r"^0\.\d days$"))
    page.screenshot(path=str(shots / "admin.png"), full_page=True)


def test_a_user_key_is_turned_away_from_the_console(page: Page, web: Server) -> None:
    key = web.create_key("web-user-only")
    page.goto(f"{web.url}/admin")
    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("user role")
    expect(page.locator("#console")).to_be_hidden()


def assert_pool(web: Server) -> None:
    # Every server has the replica pool's routes: their absence is a failure, never a skip.
    r = web.admin("GET", "/pool")
    assert r.status_code == 200, f"GET /admin/v1/pool answered {r.status_code}: {r.text}"


def test_the_pool_panel_and_the_stop_switch(
    context: BrowserContext, page: Page, web: Server
) -> None:
    assert_pool(web)
    key = web.create_key("web-stopped")
    sign_in_console(page, web.url, web.api_key)
    panel = page.locator("#panel-pool")
    expect(panel).to_be_visible()
    expect(page.locator("#pool-table tbody tr")).not_to_have_count(0)
    expect(page.locator("#pool-table tbody tr").first).to_contain_text("healthy")

    form = page.locator("#stop-form")
    form.get_by_label("Scope").select_option("tenant")
    form.get_by_label("Target").fill("web-stopped")
    form.get_by_label("Reason").fill("maintenance of the ward's records")
    form.get_by_role("button", name="Stop").click()
    stop = page.locator('#stops-table tr[data-target="web-stopped"]')
    expect(stop).to_contain_text("maintenance of the ward's records")
    expect(stop).to_contain_text("admin (admin)")

    chat = context.new_page()
    sign_in_chat(chat, web.url, key)
    send(chat, "Hello?")
    error = chat.locator("#messages li.message.assistant .error")
    expect(error).to_have_attribute("data-code", "service_stopped")
    expect(error).to_contain_text("Stopped by an administrator")
    expect(error).to_contain_text("maintenance of the ward's records")

    stop.get_by_role("button", name="Resume").click()
    expect(stop).to_have_count(0)
    expect(page.locator("#no-stops")).to_be_visible()
    chat.get_by_role("button", name="Try again").click()
    wait_answered(chat)


def test_an_auditor_sees_the_pool_but_no_stop_control(page: Page, web: Server) -> None:
    assert_pool(web)
    auditor = web.create_key("web-audit-pool", role="auditor")
    sign_in_console(page, web.url, auditor)
    expect(page.locator("#panel-pool")).to_be_visible()
    expect(page.locator("#stop-controls")).to_be_hidden()


def test_a_panel_without_its_feature_is_absent(page: Page, web: Server) -> None:
    # A server without the replica pool answers 404 there: the console shows no pool panel.
    page.route(
        "**/admin/v1/pool",
        lambda route: route.fulfill(
            status=404, content_type="application/json",
            body='{"error": {"message": "Not Found", "type": "not_found_error"}}',
        ),
    )  # fmt: skip
    sign_in_console(page, web.url, web.api_key)
    expect(page.locator("#panel-verify")).to_be_visible()
    expect(page.locator("#panel-pool")).to_be_hidden()
    expect(page.locator("#nav-panels")).not_to_contain_text("Pool")


def test_an_answer_cut_by_an_administrator_says_so(page: Page, web: Server) -> None:
    assert_pool(web)
    key = web.create_key("web-cut")
    sign_in_chat(page, web.url, key)
    page.route("**/v1/chat/completions", long_answer)
    send(page, "Tell a long story about a lighthouse keeper.", style="Balanced")
    page.wait_for_function(
        """() => {
          const el = document.querySelector(
            '#messages li.message.assistant[data-status="streaming"] .content');
          return el && el.textContent.length > 20;
        }"""
    )
    body = {"scope": "tenant", "target": "web-cut", "mode": "cut", "reason": "wrong ward"}
    assert web.admin("POST", "/stop", json=body).status_code == 200
    try:
        answer = page.locator("#messages li.message.assistant")
        expect(answer).to_have_attribute("data-status", "cut")
        expect(answer.locator(".answer-status")).to_contain_text("Stopped by an administrator")
        expect(answer.locator(".answer-status")).to_contain_text("wrong ward")
    finally:
        web.admin("POST", "/resume", json={"scope": "tenant", "target": "web-cut"})


def test_the_console_shows_failed_sign_ins(page: Page, web: Server) -> None:
    csp: list[str] = []
    page.on(
        "console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.goto(f"{web.url}/admin")
    page.fill("#api-key", "sk-sovllm-Fail" + "x" * 36)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()

    sign_in_console(page, web.url, web.api_key)
    expect(page.locator("#nav-panels")).to_contain_text("Sign-ins")
    row = page.locator('#denied-table tr[data-prefix="sk-sovllm-Fail"]')
    expect(row).to_have_count(1)
    for text in ("sk-sovllm-Fail…", "127.0.0.1", "401", "unknown: 1", "/v1/me"):
        expect(row).to_contain_text(text)
    # Not polled (each read of the list is an audit entry): a new failure shows on Refresh.
    gone = {"Authorization": "Bearer sk-sovllm-Gone" + "y" * 36}
    assert httpx.get(f"{web.base_url}/models", headers=gone).status_code == 401
    expect(page.locator('#denied-table tr[data-prefix="sk-sovllm-Gone"]')).to_have_count(0)
    page.click("#denied-refresh")
    expect(page.locator('#denied-table tr[data-prefix="sk-sovllm-Gone"]')).to_have_count(1)
    assert "sk-sovllm-Fail" + "x" * 36 not in page.content()
    reads = web.admin("GET", "/audit/entries", params={"tenant": "admin", "limit": 50}).json()
    mine = [e["entry"] for e in reads["data"] if e["entry"]["kind"] == "access.read"]
    assert sum(e["resource"] == "access.denied" for e in mine) >= 2  # sign-in and Refresh
    assert not csp, csp
