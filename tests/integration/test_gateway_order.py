"""The gateway's order (gateway/admit.py): identity, then the stop switch and the tenant's
policy, then admission. A refusal by the stop or the policy writes no admission."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from sovllm.config import load_settings
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.governance.audit import open_audit
from sovllm.governance.bootstrap import bootstrap_admin
from sovllm.serve.app import create_app
from sovllm.serve.build import in_process
from sovllm.store.db import Database, database_url
from sovllm.store.migrate import upgrade
from tests.conftest import MODEL_ID

CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Database]]:
    data = tmp_path_factory.mktemp("order")
    settings = load_settings(None, data_dir=data)
    db = Database(database_url(None, data))
    upgrade(db)
    key = bootstrap_admin(db)
    engine = LlamaCppEngine(resolve_model(settings.model), settings.engine)
    pool = in_process(engine, settings)
    with TestClient(create_app(settings, pool, db, open_audit(settings, db))) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, db


def _key(client: TestClient, tenant: str, **tenant_fields: object) -> dict[str, str]:
    made = client.post("/admin/v1/tenants", json={"name": tenant, **tenant_fields})
    assert made.status_code == 201, made.text
    r = client.post("/admin/v1/keys", json={"tenant": tenant, "role": "user"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def _admissions(db: Database, tenant: str) -> int:
    """Rows admission wrote for the tenant: rate buckets (kept after a release) and in-flight."""
    with db.read() as s:
        tid = s.execute(text("SELECT id FROM tenants WHERE name = :n"), {"n": tenant}).scalar()
        buckets = s.execute(
            text("SELECT count(*) FROM rate_buckets WHERE scope = :s"), {"s": f"t:{tid}"}
        ).scalar()
        inflight = s.execute(
            text("SELECT count(*) FROM inflight WHERE tenant_id = :t"), {"t": tid}
        ).scalar()
    return int(buckets or 0) + int(inflight or 0)


def _entries(client: TestClient, kind: str) -> list[dict[str, object]]:
    rows = client.get("/admin/v1/audit/entries", params={"limit": 1000}).json()["data"]
    return [r["entry"] for r in rows if r["entry"]["kind"] == kind]


def test_a_stopped_service_refuses_before_admission(app: tuple[TestClient, Database]) -> None:
    client, db = app
    headers = _key(client, "ward-stopped")
    stop = {"scope": "tenant", "target": "ward-stopped", "mode": "drain", "reason": "drill"}
    assert client.post("/admin/v1/stop", json=stop).status_code == 200
    try:
        for _ in range(3):
            r = client.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "service_stopped"
        # Nothing was admitted and released: admission never ran.
        assert _admissions(db, "ward-stopped") == 0
    finally:
        resume = {"scope": "tenant", "target": "ward-stopped"}
        assert client.post("/admin/v1/resume", json=resume).status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert _admissions(db, "ward-stopped") > 0  # what the count above would have seen


def test_the_stop_comes_before_a_spent_quota(app: tuple[TestClient, Database]) -> None:
    client, _ = app
    headers = _key(client, "ward-quota", rpm=1)
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    stop = {"scope": "tenant", "target": "ward-quota", "mode": "drain", "reason": "drill"}
    assert client.post("/admin/v1/stop", json=stop).status_code == 200
    try:
        r = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        # The stop answers, not the quota: no admission was tried.
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_stopped"
    finally:
        client.post("/admin/v1/resume", json={"scope": "tenant", "target": "ward-quota"})
    r = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_prompt_the_policy_cannot_check_is_refused_before_admission(
    app: tuple[TestClient, Database],
) -> None:
    client, db = app
    headers = _key(client, "ward-masked", mask_prompts=True)
    ids = {"model": MODEL_ID, "prompt": [1, 2, 3], "max_tokens": 2}
    r = client.post("/v1/completions", json=ids, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "masking_failed"
    assert _admissions(db, "ward-masked") == 0
    rejected = [
        e for e in _entries(client, "request.rejected") if e["principal"]["tenant"] == "ward-masked"
    ]  # type: ignore[index]
    assert [e["policy"] for e in rejected] == [
        {"quota": "not_checked", "pii": "token_ids_not_checkable", "masked_before_model": False}
    ]


def test_a_request_past_the_context_is_a_400_before_any_quota(
    app: tuple[TestClient, Database],
) -> None:
    """A monthly budget smaller than the request would answer 429 for tokens the model could
    never produce: the context is checked first, and nothing is admitted."""
    client, db = app
    made = client.post("/admin/v1/tenants", json={"name": "ward-context"})
    assert made.status_code == 201, made.text
    r = client.post(
        "/admin/v1/keys", json={"tenant": "ward-context", "role": "user", "monthly_tokens": 200}
    )
    assert r.status_code == 201, r.text
    headers = {"Authorization": f"Bearer {r.json()['key']}"}
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000}, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert "maximum context length is" in error["message"]
    assert _admissions(db, "ward-context") == 0
