"""Keys, roles, quotas and usage through the real server; limits across two gateways."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL_ID, Server, run_server

CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _error(r: httpx.Response, status: int) -> dict[str, str]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body  # type: ignore[no-any-return]


def _admin(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    return server.admin(method, path, **kw)


def _new_key(server: Server, tenant: str, role: str = "user", **limits: int) -> str:
    return server.create_key(tenant, role, **limits)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer sk-sovllm-wrong"}, {"Authorization": "Basic abc"}]
)
def test_inference_needs_a_valid_key(server: Server, path: str, headers: dict[str, str]) -> None:
    r = httpx.post(f"{server.url}{path}", json={**CHAT, "prompt": "x"}, headers=headers)
    body = _error(r, 401)
    assert body["code"] == "invalid_api_key"
    assert "wrong" not in body["message"]


def test_open_routes_and_closed_routes(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/ready").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200  # open by default
    _error(httpx.get(f"{server.url}/v1/models"), 401)
    # Identity comes first: without a key, what is wrong with the body is nobody's business.
    for path in ("/v1/chat/completions", "/v1/completions"):
        for body in (b"{not json", b'{"model": 7}'):
            for headers in ({}, {"content-type": "application/json"}):  # parsed, or not
                refused = httpx.post(f"{server.url}{path}", content=body, headers=headers)
                assert _error(refused, 401)["code"] == "invalid_api_key"
    _error(httpx.get(f"{server.url}/admin/v1/tenants"), 401)
    _error(httpx.get(f"{server.url}/admin/v1/usage"), 401)


def test_roles(server: Server) -> None:
    user = _new_key(server, "roles-u")
    auditor = _new_key(server, "roles-a", role="auditor")
    as_user = {"Authorization": f"Bearer {user}"}
    as_auditor = {"Authorization": f"Bearer {auditor}"}
    _error(httpx.get(f"{server.url}/admin/v1/tenants", headers=as_user), 403)
    refused = _error(httpx.get(f"{server.url}/admin/v1/usage", headers=as_user), 403)
    # The whole administration API is closed to a user: no list of roles that the route
    # itself might refuse too.
    assert refused["message"] == (
        "The role 'user' may not use the administration API (/admin/v1/usage)."
    )
    assert httpx.get(f"{server.url}/admin/v1/usage", headers=as_auditor).status_code == 200
    refused = _error(httpx.get(f"{server.url}/admin/v1/tenants", headers=as_auditor), 403)
    assert refused["message"].endswith("(allowed: admin).")
    r = httpx.post(f"{server.base_url}/chat/completions", json=CHAT, headers=as_auditor)
    assert _error(r, 403)["type"] == "permission_error"
    ok = httpx.post(f"{server.base_url}/chat/completions", json=CHAT, headers=as_user, timeout=60)
    assert ok.status_code == 200


def test_admin_creates_a_key_that_works_until_revoked(server: Server) -> None:
    assert (
        _admin(server, "POST", "/tenants", json={"name": "oncology", "rpm": 100}).status_code == 201
    )
    r = _admin(
        server, "POST", "/keys", json={"tenant": "oncology", "role": "user", "name": "ward 3"}
    )
    assert r.status_code == 201
    created = r.json()
    raw, key_id = created["key"], created["id"]
    client = openai.OpenAI(base_url=server.base_url, api_key=raw, max_retries=0)
    out = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert out.usage is not None
    listed = _admin(server, "GET", "/keys", params={"tenant": "oncology"}).json()["data"]
    assert [k["id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and raw not in str(listed)
    assert _admin(server, "POST", f"/keys/{key_id}/revoke").json()["active"] is False
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    # The key never reaches the log.
    assert raw not in server.log.read_text()


def test_malformed_admin_requests_name_the_field(server: Server) -> None:
    assert (
        _error(_admin(server, "POST", "/tenants", json={"name": "x", "rpm": -5}), 400)["param"]
        == "rpm"
    )
    assert (
        _error(_admin(server, "POST", "/keys", json={"tenant": "x", "role": "king"}), 400)["param"]
        == "role"
    )
    assert _error(_admin(server, "POST", "/tenants", json={"nam": "x"}), 400)["param"] in {
        "name",
        "nam",
    }
    _error(_admin(server, "POST", "/keys", json={"tenant": "no-such", "role": "user"}), 404)
    _error(_admin(server, "POST", "/tenants", json={"name": "Bad Name"}), 400)


def test_tenant_with_live_keys_is_deleted_only_with_force(server: Server) -> None:
    raw = _new_key(server, "to-delete")
    assert _error(_admin(server, "DELETE", "/tenants/to-delete"), 409)
    r = _admin(server, "DELETE", "/tenants/to-delete", params={"force": "true"})
    assert r.json()["revoked_keys"] == 1
    bad = httpx.post(
        f"{server.base_url}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {raw}"}
    )
    _error(bad, 401)


def test_patch_changes_only_what_it_names(server: Server) -> None:
    r = server.admin(
        "POST",
        "/tenants",
        json={"name": "patchy", "rpm": 10, "tpm": 5000, "content_policy": "redacted"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["content_policy"], r.json()["limits"]["rpm"]) == ("redacted", 10)
    r = server.admin("PATCH", "/tenants/patchy", json={"content_policy": "full"})
    assert r.status_code == 200, r.text
    assert r.json()["content_policy"] == "full"
    assert r.json()["limits"] == {
        "rpm": 10,
        "tpm": 5000,
        "max_concurrent": None,
        "monthly_tokens": None,
    }
    r = server.admin("PATCH", "/tenants/patchy", json={"rpm": None, "max_concurrent": 2})
    assert r.json()["limits"] == {
        "rpm": None,
        "tpm": 5000,
        "max_concurrent": 2,
        "monthly_tokens": None,
    }
    key = server.admin(
        "POST", "/keys", json={"tenant": "patchy", "role": "user", "rpm": 7, "tpm": 700}
    ).json()
    r = server.admin("PATCH", f"/keys/{key['id']}", json={"tpm": 900})
    assert r.json()["limits"]["rpm"] == 7 and r.json()["limits"]["tpm"] == 900
    listed = {t["name"]: t for t in server.admin("GET", "/tenants").json()["data"]}
    assert listed["patchy"]["content_policy"] == "full"
    entries = server.admin("GET", "/audit/entries", params={"limit": 50}).json()["data"]
    actions = [e["entry"].get("action") for e in entries]
    assert "tenant.create" in actions and "tenant.update" in actions


def test_rate_limit_429_with_openai_headers_and_usage(server: Server) -> None:
    raw = _new_key(server, "limited", rpm=2, tpm=10_000)
    h = {"Authorization": f"Bearer {raw}"}
    url = f"{server.base_url}/chat/completions"
    first = httpx.post(url, json=CHAT, headers=h, timeout=60)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "10000"
    second = httpx.post(url, json=CHAT, headers=h, timeout=60)
    assert second.status_code == 200
    third = httpx.post(url, json=CHAT, headers=h, timeout=60)
    body = _error(third, 429)
    assert body["code"] == "rate_limit_exceeded"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    usage = _admin(server, "GET", "/usage", params={"tenant": "limited"}).json()["data"]
    assert len(usage) == 1 and usage[0]["requests"] == 2
    # Usage records what each answer reported, exactly; the refused third request adds nothing.
    answered = [r.json()["usage"] for r in (first, second)]
    assert usage[0]["prompt_tokens"] == sum(u["prompt_tokens"] for u in answered)
    assert usage[0]["completion_tokens"] == sum(u["completion_tokens"] for u in answered) > 0


# -- two gateway processes on one database ----------------------------------------------------


@pytest.fixture
def two_gateways(tmp_path: Path, database_url_any: str) -> Iterator[tuple[Server, Server]]:
    env = {"SOVLLM_DATABASE_URL": database_url_any, "SOVLLM_ENGINE__SLOTS": "8"}
    with run_server(tmp_path / "a", env) as a:
        # Gateways of one service share its keys (docs/deploy.md: mounted secrets): b reads a's.
        keys = a.data_dir / "audit"
        shared = {
            "SOVLLM_AUDIT__KEY_FILE": str(keys / "signing.key"),
            "SOVLLM_PRIVACY__MASTER_KEY_FILE": str(keys / "master.key"),
            "SOVLLM_PRIVACY__PSEUDONYM_KEY_FILE": str(keys / "pseudonym.key"),
        }
        with run_server(tmp_path / "b", {**env, **shared}) as b:
            assert a.api_key and not b.api_key  # one bootstrap key between them
            b.api_key = a.api_key
            yield a, b


async def _fire(
    gateways: tuple[Server, Server], key: str, path: str, body: dict[str, object], n: int
) -> list[int]:
    """n concurrent requests, alternating between the gateways; returns the status codes."""
    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(
        timeout=120, limits=limits, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def one(i: int) -> int:
            r = await http.post(f"{gateways[i % 2].base_url}{path}", json=body)
            return r.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_requests_per_minute_hold_across_two_gateways(
    two_gateways: tuple[Server, Server],
) -> None:
    key = _new_key(two_gateways[0], "rpm20", rpm=20)
    codes = await _fire(two_gateways, key, "/chat/completions", {**CHAT, "max_tokens": 1}, 200)
    assert codes.count(200) == 20
    assert codes.count(429) == 180


async def test_tokens_per_minute_hold_across_two_gateways(
    two_gateways: tuple[Server, Server],
) -> None:
    key = _new_key(two_gateways[0], "tpm", tpm=400)
    # 10 prompt tokens + 10 forced output tokens = 20 reserved and 20 used: 400 / 20 = 20.
    body = {
        "model": MODEL_ID,
        "prompt": list(range(100, 110)),
        "max_tokens": 10,
        "ignore_eos": True,
    }
    codes = await _fire(two_gateways, key, "/completions", body, 200)
    assert codes.count(200) == 20
    assert codes.count(429) == 180


async def test_concurrency_holds_across_two_gateways(two_gateways: tuple[Server, Server]) -> None:
    key = _new_key(two_gateways[0], "conc", max_concurrent=4)
    body = {**CHAT, "max_tokens": 1000, "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=250), headers=headers
    ) as http:
        statuses: list[int] = []
        all_answered = asyncio.Event()
        held: list[asyncio.Task[None]] = []

        async def one(i: int) -> None:
            async with http.stream(
                "POST", f"{two_gateways[i % 2].base_url}/chat/completions", json=body
            ) as r:
                statuses.append(r.status_code)
                if len(statuses) == 200:
                    all_answered.set()
                if r.status_code == 200:
                    # Hold the stream open until every request has its answer.
                    await all_answered.wait()

        held = [asyncio.create_task(one(i)) for i in range(200)]
        await asyncio.wait_for(all_answered.wait(), 120)
        await asyncio.gather(*held)
    assert statuses.count(200) == 4
    assert statuses.count(429) == 196
