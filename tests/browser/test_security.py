"""Headers and rules the pages rely on: CSP, nosniff, closed CORS, no inline code, /v1/me."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import Server

STATIC = Path(__file__).resolve().parents[2] / "src" / "sovllm" / "web" / "static"


@pytest.mark.parametrize(
    "path", ["/", "/admin", "/static/chat.js", "/static/style.css", "/v1/models", "/health"]
)
def test_every_response_sets_a_strict_csp_and_nosniff(web: Server, path: str) -> None:
    r = httpx.get(f"{web.url}{path}", headers=web.auth)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_static_files_have_their_types_and_no_way_out(web: Server) -> None:
    assert (
        httpx.get(f"{web.url}/static/chat.js").headers["content-type"].startswith("text/javascript")
    )
    assert httpx.get(f"{web.url}/static/style.css").headers["content-type"].startswith("text/css")
    for path in ("/static/../routes.py", "/static/%2e%2e/routes.py", "/static/nope.js"):
        assert httpx.get(f"{web.url}{path}").status_code == 404


def test_the_pages_have_no_inline_script_or_style() -> None:
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, f"{page.name}: inline script {tag}"
        assert "<style" not in html, page.name
        assert not re.search(r"\sstyle=", html), page.name
        assert not re.search(r"\son[a-z]+=", html), page.name
    for script in STATIC.glob("*.js"):
        code = script.read_text()
        assert "innerHTML" not in code and "insertAdjacentHTML" not in code, script.name
        assert "eval(" not in code and "new Function" not in code, script.name


def test_cors_is_closed(web: Server) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    r = httpx.get(f"{web.base_url}/models", headers={**web.auth, **origin})
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(
        f"{web.base_url}/chat/completions",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert "access-control-allow-origin" not in pre.headers


def test_a_cross_origin_page_cannot_read_the_api(page: Page, web: Server) -> None:
    # A page of another origin (localhost, not 127.0.0.1), with no CSP of its own.
    other = web.url.replace("127.0.0.1", "localhost") + "/elsewhere"
    page.route(
        other, lambda route: route.fulfill(body="<p>elsewhere</p>", content_type="text/html")
    )
    read = """async ([url, key]) => {
      try {
        const r = await fetch(url + '/v1/models', {headers: {Authorization: 'Bearer ' + key}});
        return 'read ' + r.status;
      } catch (e) {
        return 'blocked';
      }
    }"""
    page.goto(other)
    assert page.evaluate(read, [web.url, web.api_key]) == "blocked"
    page.goto(f"{web.url}/")  # the control: the same call from the service's own origin
    assert page.evaluate(read, [web.url, web.api_key]) == "read 200"


def test_who_am_i(web: Server) -> None:
    key = web.create_key("web-me", rpm=5)
    r = httpx.get(f"{web.base_url}/me", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    me = r.json()
    assert me["tenant"] == "web-me" and me["role"] == "user"
    assert me["content_policy"] == "none" and me["mask_prompts"] is False
    assert me["key_limits"]["rpm"] == 5 and me["content_retention_days"] == 30
    assert httpx.get(f"{web.base_url}/me").status_code == 401
