"""The chat page in a real browser, against the real server and model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import PHONE, Watch
from tests.browser.pages import (
    ANSWER,
    last_turn,
    long_answer,
    send,
    sign_in_chat,
    wait_answered,
)
from tests.conftest import MODEL_ID, Server


def test_sign_in_and_chat_with_the_keyboard_alone(page: Page, web: Server) -> None:
    page.goto(f"{web.url}/")
    # AI Act Art. 50(1): the first screen says this is an AI system, before anything else.
    expect(page.locator("#ai-notice")).to_contain_text("You are talking to an AI system")
    expect(page.locator("#api-key")).to_be_focused()
    page.keyboard.type(web.api_key)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.type("Say hello.")
    page.keyboard.press("Enter")
    answer = wait_answered(page)
    expect(answer.locator(".content")).not_to_be_empty()
    expect(page.locator("#prompt")).to_be_focused()
    # The key lives in this tab's session storage, nowhere else, and never in the address.
    stored = page.evaluate("sessionStorage.getItem('sovllm.chat.key')")
    assert stored == web.api_key
    assert page.evaluate("JSON.stringify(localStorage)").find(web.api_key) == -1
    assert web.api_key not in page.url


def test_the_model_and_its_weights_fingerprint_are_shown(page: Page, web: Server) -> None:
    card = httpx.get(f"{web.base_url}/models", headers=web.auth).json()["data"][0]
    sign_in_chat(page, web.url, web.api_key)
    expect(page.locator("#model-id")).to_have_text(MODEL_ID)
    expect(page.locator("#model-sha")).to_have_attribute("data-sha256", card["sha256"])
    expect(page.locator("#model-sha")).to_contain_text(card["sha256"][:12])


def test_an_answer_streams_in_token_by_token_and_is_marked_ai_generated(
    page: Page, web: Server
) -> None:
    sign_in_chat(page, web.url, web.api_key)
    # Record the answer's length at every change of the DOM while it streams.
    page.evaluate(
        """() => {
          window.lengths = [];
          new MutationObserver(() => {
            const el = document.querySelector(
              '#messages li.message.assistant[data-status="streaming"] .content');
            if (el) window.lengths.push(el.textContent.length);
          }).observe(document.getElementById('messages'),
                     {childList: true, subtree: true, characterData: true});
        }"""
    )
    send(page, "Count from one to twenty in words, separated by commas.")
    answer = wait_answered(page)
    lengths: list[int] = page.evaluate("window.lengths")
    growth = sorted({n for n in lengths if n > 0})
    assert len(growth) >= 5, f"the answer did not grow token by token: {lengths}"
    final = answer.locator(".content").inner_text()
    assert len(final) >= growth[-1] > growth[0]
    # Marked for people and for machines (AI Act Art. 50(2)).
    expect(answer).to_have_attribute("data-ai-generated", "true")
    expect(answer.locator(".badge.ai")).to_have_text("AI-generated")
    request_id = answer.get_attribute("data-request-id")
    assert request_id is not None and request_id.startswith("chatcmpl-")
    expect(answer).to_have_attribute("data-model", MODEL_ID)
    expect(answer.locator(".request-id")).to_contain_text(request_id)


def test_stop_generating(page: Page, web: Server) -> None:
    sign_in_chat(page, web.url, web.api_key)
    page.route("**/v1/chat/completions", long_answer)
    send(page, "Tell a long story about a lighthouse keeper.", style="Balanced")
    stop = page.locator("#stop")
    expect(stop).to_be_visible()
    page.wait_for_function(
        """() => {
          const el = document.querySelector(
            '#messages li.message.assistant[data-status="streaming"] .content');
          return el && el.textContent.length > 40;
        }"""
    )
    stop.click()
    answer = last_turn(page)
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer.locator(".answer-status")).to_contain_text("Stopped")
    expect(stop).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    # The server saw the client leave and freed the slot, long before 512 tokens.
    web.wait_for_metric("num_requests_running", 0)
    kept = answer.locator(".content").inner_text()
    assert 40 <= len(kept) < 3000
    # Regenerate replaces the stopped answer with a new one.
    page.unroute("**/v1/chat/completions")
    page.select_option("#temperature", label="Precise")
    answer.locator(".regenerate").click()
    wait_answered(page)
    expect(page.locator(ANSWER)).to_have_count(1)


def test_conversations_survive_a_reload_and_delete_all_empties_them(
    page: Page, web: Server
) -> None:
    key = web.create_key("web-history")
    sign_in_chat(page, web.url, key)
    send(page, "What is the capital of France?")
    wait_answered(page)
    page.click("#new-chat")
    send(page, "Name a colour.")
    wait_answered(page)

    page.reload()
    items = page.locator("#conversations .open-conversation")
    expect(items).to_have_count(2)
    expect(items.first).to_have_text("Name a colour.")  # newest first
    page.get_by_role("button", name="What is the capital of France?", exact=True).click()
    expect(page.locator("#messages li.message.user .content")).to_have_text(
        ["What is the capital of France?"]
    )
    expect(page.locator(ANSWER)).to_have_attribute("data-ai-generated", "true")
    expect(page.locator("#storage-browser")).to_contain_text("only in this browser")
    expect(page.locator("#storage-policy")).to_have_attribute("data-policy", "none")

    page.click("#delete-all")
    page.click("#delete-yes")
    expect(page.locator("#conversations li")).to_have_count(0)
    expect(page.locator("#messages li")).to_have_count(0)
    stored = page.evaluate(
        "Object.keys(localStorage).filter(k => k.startsWith('sovllm.conversations.'))"
    )
    assert stored == []
    page.reload()
    expect(page.locator("#no-conversations")).to_be_visible()


def test_the_page_says_when_a_tenant_keeps_content(page: Page, web: Server) -> None:
    key = web.create_key("web-kept")
    r = web.admin("PATCH", "/tenants/web-kept", json={"content_policy": "redacted"})
    assert r.status_code == 200, r.text
    sign_in_chat(page, web.url, key)
    policy = page.locator("#storage-policy")
    expect(policy).to_have_attribute("data-policy", "redacted")
    expect(policy).to_contain_text("personal data masked")


def test_the_quota_error_says_when_to_send_again(page: Page, web: Server) -> None:
    key = web.create_key("web-quota", rpm=1)
    sign_in_chat(page, web.url, key)
    send(page, "Say yes.")
    wait_answered(page)
    send(page, "Say no.")
    failed = last_turn(page)
    expect(failed).to_have_attribute("data-status", "error")
    error = failed.locator(".error")
    expect(error).to_have_attribute("data-code", "rate_limit_exceeded")
    expect(error).to_contain_text("You have reached your quota: 1 requests per minute")
    expect(error).to_contain_text("You can send again at")
    expect(failed.locator(".regenerate")).to_have_text("Try again")


def test_a_conversation_too_long_for_the_model_is_explained(page: Page, web: Server) -> None:
    sign_in_chat(page, web.url, web.api_key)
    page.fill("#prompt", "lorem ipsum " * 1500)
    page.click("#send")
    error = last_turn(page).locator(".error")
    expect(error).to_have_attribute("data-code", "context_length_exceeded")
    expect(error).to_contain_text("too long for the model")
    expect(error).to_contain_text("2,048 tokens")


def test_a_stopped_service_is_explained(page: Page, web: Server) -> None:
    # The server's answer while an administrator has stopped it, as the API sends it.
    stopped = {
        "error": {
            "message": "The service is stopped by an administrator: maintenance.",
            "type": "server_error",
            "param": None,
            "code": "service_stopped",
        }
    }
    sign_in_chat(page, web.url, web.api_key)
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body=json.dumps(stopped)
        ),
    )
    send(page, "Hello?")
    error = last_turn(page).locator(".error")
    expect(error).to_have_attribute("data-code", "service_stopped")
    expect(error).to_contain_text("Stopped by an administrator")


def test_model_output_is_never_run_as_html(page: Page, web: Server, watch: Watch) -> None:
    sign_in_chat(page, web.url, web.api_key)
    payload = 'Repeat exactly: <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>'
    send(page, payload)
    answer = wait_answered(page)
    # The model echoed the markup; the page shows it as text.
    expect(answer.locator(".content")).to_contain_text("onerror")
    assert page.locator("#messages img, #messages script, #messages svg").count() == 0
    assert page.evaluate("window.pwned") is None
    assert not watch.dialogs

    # And the renderer itself, fed the payloads directly.
    result = page.evaluate(
        """async () => {
          const { renderInto } = await import('/static/markdown.js');
          const host = document.createElement('div');
          document.body.append(host);
          const payloads = [
            '<script>window.pwned = 3</script>',
            '<img src=x onerror="window.pwned = 4">',
            '**<svg onload="window.pwned = 5">**',
            '[click](javascript:window.pwned=6)',
            '[click](JaVaScRiPt:alert(1))',
            '[click](java\\tscript:alert(1))',
            '[data](data:text/html,<script>alert(1)</script>)',
            '<a href="javascript:alert(1)">a</a>',
            '```html\\n<script>window.pwned = 7</script>\\n```',
            '`<img src=x onerror=window.pwned=8>`',
            '- <iframe src="javascript:alert(1)"></iframe>',
            '[ok](https://example.org/a_(b)) and <https://example.org/x>',
          ];
          const out = [];
          for (const p of payloads) {
            renderInto(host, p);
            out.push({
              text: host.textContent,
              elements: [...host.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
              hrefs: [...host.querySelectorAll('a')].map(a => a.getAttribute('href')),
              handlers: [...host.querySelectorAll('*')].flatMap(
                e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
            });
          }
          host.remove();
          return out;
        }"""
    )
    allowed = {"p", "br", "strong", "em", "del", "code", "pre", "div", "span", "button",
               "ul", "ol", "li", "a"}  # fmt: skip
    for case in result:
        assert set(case["elements"]) <= allowed, case
        assert not case["handlers"], case
        for href in case["hrefs"]:
            assert href.startswith("https://"), case
    assert "<script>window.pwned = 3</script>" in result[0]["text"]
    assert "onerror" in result[1]["text"]
    assert result[3]["hrefs"] == [] and "javascript:" in result[3]["text"]
    assert result[-1]["hrefs"] == ["https://example.org/a_(b)", "https://example.org/x"]
    assert page.evaluate("window.pwned") is None


def test_markdown_is_rendered(page: Page, web: Server) -> None:
    page.goto(f"{web.url}/")
    html = page.evaluate(
        """async () => {
          const { renderMarkdown } = await import('/static/markdown.js');
          const host = document.createElement('div');
          host.append(renderMarkdown(
            '# Title\\n\\nSome *em* and **bold** and `code`.\\n\\n- one\\n- two\\n  - nested\\n\\n'
            + '1. first\\n2. second\\n\\n> quoted\\n\\n```python\\nprint(1 < 2)\\n```\\n\\n'
            + '```js\\nstill streaming'));
          return host.innerHTML;
        }"""
    )
    assert "<h3>Title</h3>" in html
    assert "<em>em</em>" in html and "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert "<blockquote><p>quoted</p></blockquote>" in html
    assert '<code data-lang="python">print(1 &lt; 2)</code>' in html
    assert 'data-open="true"' in html and "still streaming" in html


def test_a_phone_sized_screen(context: BrowserContext, web: Server, shots: Path) -> None:
    page = context.new_page()
    page.set_viewport_size(PHONE)
    sign_in_chat(page, web.url, web.api_key)
    expect(page.locator("#ai-notice")).to_be_visible()
    send(page, "Write a haiku about the sea.")
    wait_answered(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width}px"
    toggle = page.locator("#toggle-history")
    expect(toggle).to_be_visible()
    expect(page.locator("#history")).to_be_hidden()
    page.screenshot(path=str(shots / "chat-phone.png"))
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#conversations li")).not_to_have_count(0)


def test_chat_screenshot(page: Page, web: Server, shots: Path) -> None:
    key = web.create_key("radiology")
    sign_in_chat(page, web.url, key)
    # Answers long enough to look like answers in the picture.
    page.route(
        "**/v1/chat/completions",
        lambda route: route.continue_(
            post_data=json.dumps({**json.loads(route.request.post_data or "{}"), "max_tokens": 90})
        ),
    )
    send(page, "Write a Python function that adds two numbers.")
    wait_answered(page)
    page.click("#new-chat")
    send(page, "What does GDPR stand for?")
    wait_answered(page)
    title = "Write a Python function that adds two numbers."
    page.get_by_role("button", name=title, exact=True).click()
    expect(page.locator(".code-block")).not_to_have_count(0)
    page.locator("#prompt").focus()
    page.screenshot(path=str(shots / "chat.png"))
