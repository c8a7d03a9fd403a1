"""The review queue in a real browser: a reviewer approves a held answer in the console and the
chat page then shows it; an override shows on the answer it disregards, with the note."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.pages import LAST_ANSWER, send, sign_in_chat, sign_in_console
from tests.conftest import Server


def tenant(web: Server, name: str, review: str) -> tuple[str, str]:
    r = web.admin(
        "POST", "/tenants", json={"name": name, "review_policy": review, "content_policy": "full"}
    )
    assert r.status_code == 201, r.text
    return web.create_key(name), web.create_key(name, role="reviewer")


def open_in_console(console: Page, web: Server, reviewer: str, request_id: str) -> None:
    sign_in_console(console, web.url, reviewer)
    panel = console.locator("#panel-review")
    expect(panel).to_be_visible()
    expect(console.locator("#panel-tenants")).to_be_hidden()  # a reviewer's console: the queue
    row = panel.locator(f'tr[data-request-id="{request_id}"]')
    expect(row).to_be_visible()
    row.get_by_role("button", name=f"Open {request_id}").click()
    expect(console.locator("#review-detail")).to_have_attribute("data-request-id", request_id)


def test_a_held_answer_appears_in_the_chat_once_approved(
    context: BrowserContext, page: Page, web: Server
) -> None:
    user, reviewer = tenant(web, "web-held", "hold")
    sign_in_chat(page, web.url, user)
    send(page, "Say hello.")
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-review", "pending")
    expect(answer.locator(".review-status")).to_contain_text("Held for review")
    expect(answer.locator(".content")).to_have_text("")  # nothing of it before approval
    request_id = answer.get_attribute("data-request-id")
    assert request_id and request_id.startswith("chatcmpl-")

    console = context.new_page()
    open_in_console(console, web, reviewer, request_id)
    detail = console.locator("#review-detail")
    expect(detail.locator(".review-text")).to_have_count(2)  # prompt and answer (policy full)
    shown = detail.locator(".review-text").nth(1).text_content()
    assert shown
    console.locator("#review-approve").click()
    expect(console.locator("#review-result")).to_contain_text(f"{request_id}: approved")

    # The chat page polls the pending answer and shows it once approved.
    expect(answer).to_have_attribute("data-review", "approved", timeout=30_000)
    expect(answer.locator(".review-status")).to_contain_text("Approved by a reviewer")
    expect(answer.locator(".content")).not_to_have_text("")


def test_an_override_shows_on_the_answer_it_disregards(
    context: BrowserContext, page: Page, web: Server
) -> None:
    user, reviewer = tenant(web, "web-sampled", "sample:100")
    sign_in_chat(page, web.url, user)
    send(page, "Say hello.")
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-status", "done", timeout=60_000)
    request_id = answer.get_attribute("data-request-id")
    assert request_id

    console = context.new_page()
    open_in_console(console, web, reviewer, request_id)
    console.locator("#review-override").click()  # no note yet: refused on the page
    expect(console.locator("#review-result")).to_contain_text("needs a note")
    console.locator("#review-note").fill("Greeting policy changed.")
    console.locator("#review-override").click()
    expect(console.locator("#review-result")).to_contain_text(f"{request_id}: overridden")

    page.reload()
    # Opening the conversation again looks its answers' reviews up.
    page.locator("#conversations").get_by_role("button", name="Say hello.", exact=True).click()
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-review", "overridden")
    expect(answer.locator(".review-status")).to_contain_text(
        "Disregarded by a reviewer: Greeting policy changed."
    )


def test_an_admin_sets_a_tenant_review_policy_in_the_console(page: Page, web: Server) -> None:
    web.admin("POST", "/tenants", json={"name": "web-policy"})
    sign_in_console(page, web.url, web.api_key)
    page.get_by_role("button", name="Edit tenant web-policy").click()
    form = page.locator("#tenant-form")
    form.get_by_label("Human review").fill("sometimes")
    page.click("#tenant-submit")
    expect(page.locator("#tenant-result")).to_contain_text("review policy must be")
    form.get_by_label("Human review").fill("sample:20")
    page.click("#tenant-submit")
    expect(page.locator("#tenant-result")).to_contain_text("Tenant web-policy saved.")
    tenants = {t["name"]: t for t in web.admin("GET", "/tenants").json()["data"]}
    assert tenants["web-policy"]["review_policy"] == "sample:20"
    # The admin's console has the review queue too.
    expect(page.locator("#panel-review")).to_be_visible()
