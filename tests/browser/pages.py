"""Helpers that drive the chat page and the admin console the way a person does."""

from __future__ import annotations

import json

from playwright.sync_api import Locator, Page, Route, expect

ANSWER = "#messages li.message.assistant"
LAST_ANSWER = f"{ANSWER} >> nth=-1"


def sign_in_chat(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/")
    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def sign_in_console(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/admin")
    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#console")).to_be_visible()


def send(page: Page, text: str, style: str = "Precise") -> None:
    page.select_option("#temperature", label=style)
    page.fill("#prompt", text)
    page.click("#send")


def last_turn(page: Page) -> Locator:
    """The last assistant entry: an answer, or the plain-words error in its place."""
    return page.locator(LAST_ANSWER)


def wait_answered(page: Page, timeout: float = 60_000) -> Locator:
    answer = last_turn(page)
    expect(answer).to_have_attribute("data-status", "done", timeout=timeout)
    return answer


def long_answer(route: Route) -> None:
    """Make the answer long, whatever the model would say: the server's ignore_eos."""
    body = json.loads(route.request.post_data or "{}")
    route.continue_(post_data=json.dumps({**body, "ignore_eos": True, "max_tokens": 512}))
