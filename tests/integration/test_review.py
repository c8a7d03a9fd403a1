"""Human review and override (AI Act Art. 14(4)(b)-(d)) on the real server and model: a
sampled tenant's answers queued after delivery, a held tenant's answers pending until a reviewer
approves them (fetched with the official client's stored-completion retrieval), streams refused
under hold, overrides shown to the client, the reviewer role's reach, the audit entries for
every read and decision, and a held answer that stays undelivered across a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL_ID, Server, run_server, wait_until

PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("review")) as server:
        yield server


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **(server.env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def tenant(server: Server, name: str, review: str, content: str = "full") -> None:
    body = {"name": name, "review_policy": review, "content_policy": content}
    r = server.admin("POST", "/tenants", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["review_policy"] == review


def as_key(server: Server, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, f"{server.url}{path}", headers=auth, timeout=120, **kw)


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def ask(server: Server, key: str) -> Any:
    return client(server, key).chat.completions.create(
        model=MODEL_ID,
        messages=PROMPT,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )


def entries(server: Server, kind: str) -> list[dict[str, Any]]:
    rows = server.admin("GET", "/audit/entries", params={"limit": 1000}).json()["data"]
    return [dict(r["entry"], seq=r["seq"]) for r in rows if r["entry"]["kind"] == kind]


def test_sample_100_queues_every_answer_after_delivery(srv: Server) -> None:
    tenant(srv, "sampled", "sample:100")
    user = srv.create_key("sampled")
    reviewer = srv.create_key("sampled", role="reviewer")
    answered = ask(srv, user)
    assert answered.choices[0].message.content  # delivered at once
    stream = client(srv, user).chat.completions.create(
        model=MODEL_ID,
        messages=PROMPT,
        max_tokens=8,
        stream=True,  # type: ignore[arg-type]
    )
    streamed_id = {chunk.id for chunk in stream}.pop()
    ids = {answered.id, streamed_id}

    def queued() -> set[str]:
        r = as_key(srv, reviewer, "GET", "/admin/v1/reviews")
        assert r.status_code == 200, r.text
        return {row["request_id"] for row in r.json()["data"] if row["mode"] == "sample"}

    wait_until(lambda: ids <= queued(), "both sampled answers in the queue")
    got = client(srv, user).chat.completions.retrieve(answered.id)
    assert got.model_extra is not None
    assert got.model_extra["sovllm_review"]["status"] == "pending"
    assert got.model_extra["sovllm_review"]["mode"] == "sample"


def test_hold_returns_pending_then_the_approved_answer_once(srv: Server) -> None:
    tenant(srv, "held", "hold")
    user = srv.create_key("held")
    other = srv.create_key("held")
    reviewer = srv.create_key("held", role="reviewer")
    raw = as_key(
        srv, user, "POST", "/v1/chat/completions",
        json={"model": MODEL_ID, "messages": PROMPT, "max_tokens": 12, "temperature": 0},
    )  # fmt: skip
    assert raw.status_code == 202, raw.text
    assert raw.headers["x-sovllm-review"] == "pending"
    body = raw.json()
    assert body["choices"] == [] and body["sovllm_review"]["status"] == "pending"
    rid = body["id"]
    assert body["sovllm_review"]["retrieve"] == f"/v1/chat/completions/{rid}"
    # The official client takes the pending completion as it is, and retrieves it.
    pending = ask(srv, user)
    assert pending.choices == [] and pending.model_extra is not None
    assert pending.model_extra["sovllm_review"]["status"] == "pending"
    still = client(srv, user).chat.completions.retrieve(rid)
    assert still.choices == []
    assert (
        still.model_extra is not None and still.model_extra["sovllm_review"]["status"] == "pending"
    )
    # Only the key that asked may fetch it.
    assert as_key(srv, other, "GET", f"/v1/chat/completions/{rid}").status_code == 404
    # The reviewer reads it (content policy full), then approves.
    shown = as_key(srv, reviewer, "GET", f"/admin/v1/reviews/{rid}")
    assert shown.status_code == 200, shown.text
    content = shown.json()["content"]
    assert content["shown"] == "full" and content["answer"] and "Name a colour" in content["prompt"]
    decided = as_key(srv, reviewer, "POST", f"/admin/v1/reviews/{rid}/approve", json={})
    assert decided.status_code == 200 and decided.json()["status"] == "approved", decided.text
    again = as_key(srv, reviewer, "POST", f"/admin/v1/reviews/{rid}/approve", json={})
    assert again.status_code == 409
    approved = client(srv, user).chat.completions.retrieve(rid)
    assert approved.choices[0].message.content == content["answer"]
    assert approved.choices[0].finish_reason in ("stop", "length")
    later = client(srv, user).chat.completions.retrieve(rid)
    assert later.choices[0].message.content is None  # handed over once, then deleted
    assert later.model_extra is not None
    assert "not kept after delivery" in later.model_extra["sovllm_review"]["message"]
    # Every read and decision is in the log with its actor, and delivery came after approval.
    reads = [e for e in entries(srv, "access.read") if e["resource"] == "review.content"]
    assert any(
        e["query"] == {"request_id": rid} and e["actor"]["role"] == "reviewer" for e in reads
    )
    decision = [e for e in entries(srv, "review.decided") if e["request_id"] == rid]
    assert [e["decision"] for e in decision] == ["approve"]
    assert decision[0]["actor"]["role"] == "reviewer"
    delivered = [e for e in entries(srv, "review.delivered") if e["request_id"] == rid]
    assert len(delivered) == 1 and delivered[0]["seq"] > decision[0]["seq"]
    queued = [e for e in entries(srv, "review.queued") if e["request_id"] == rid]
    assert queued[0]["mode"] == "hold" and queued[0]["seq"] < decision[0]["seq"]


def test_hold_refuses_a_stream_and_says_why(srv: Server) -> None:
    tenant(srv, "held-stream", "hold")
    user = srv.create_key("held-stream")
    with pytest.raises(openai.BadRequestError) as refused:
        client(srv, user).chat.completions.create(
            model=MODEL_ID,
            messages=PROMPT,
            max_tokens=4,
            stream=True,  # type: ignore[arg-type]
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "review_hold"
    assert "cannot be streamed" in error["message"] and "stream set to false" in error["message"]
    legacy = as_key(srv, user, "POST", "/v1/completions", json={"model": MODEL_ID, "prompt": "Hi"})
    assert (
        legacy.status_code == 400 and "only chat completions" in legacy.json()["error"]["message"]
    )
    rejected = [
        e for e in entries(srv, "request.rejected") if e["principal"]["tenant"] == "held-stream"
    ]
    assert len(rejected) == 2 and all(e["policy"]["review"] for e in rejected)


def test_an_override_is_shown_to_the_client(srv: Server) -> None:
    tenant(srv, "overridden", "hold", content="none")
    user = srv.create_key("overridden")
    rid = ask(srv, user).id
    # Content policy none: the reviewer sees no text, and is told why.
    shown = srv.admin("GET", f"/reviews/{rid}").json()
    assert (
        shown["content"]["answer"] is None and "content policy is none" in shown["content"]["note"]
    )
    done = cli(srv, "review", "override", rid, "--note", "Not a clinical answer.")
    assert done.returncode == 0, done.stderr
    assert f"review {rid}: overridden" in done.stdout
    got = client(srv, user).chat.completions.retrieve(rid)
    message = got.choices[0].message
    assert message.content is None and message.refusal is not None
    assert "Not a clinical answer." in message.refusal
    assert got.model_extra is not None
    review = got.model_extra["sovllm_review"]
    assert review["status"] == "overridden" and review["note"] == "Not a clinical answer."
    decision = [e for e in entries(srv, "review.decided") if e["request_id"] == rid]
    assert decision[0]["decision"] == "override" and "cli" in decision[0]["actor"]
    listed = cli(srv, "review", "list", "--status", "overridden", "--json")
    assert listed.returncode == 0 and rid in listed.stdout
    bad = cli(srv, "review", "list", "--status", "done")
    assert bad.returncode == 2 and "--status" in bad.stderr


def test_reviewers_review_and_nothing_else(srv: Server) -> None:
    tenant(srv, "ward", "hold")
    tenant(srv, "other-ward", "hold")
    reviewer = srv.create_key("ward", role="reviewer")
    user = srv.create_key("ward")
    stranger = srv.create_key("other-ward", role="reviewer")
    rid = ask(srv, user).id
    for path in ("/admin/v1/tenants", "/admin/v1/keys", "/admin/v1/audit/entries"):
        assert as_key(srv, reviewer, "GET", path).status_code == 403, path
    chat = {"model": MODEL_ID, "messages": PROMPT, "max_tokens": 2}
    assert as_key(srv, reviewer, "POST", "/v1/chat/completions", json=chat).status_code == 403
    assert as_key(srv, user, "GET", "/admin/v1/reviews").status_code == 403
    approve = f"/admin/v1/reviews/{rid}/approve"
    assert as_key(srv, user, "POST", approve, json={}).status_code == 403
    # A reviewer of another tenant does not learn the answer exists.
    assert as_key(srv, stranger, "GET", f"/admin/v1/reviews/{rid}").status_code == 404
    assert as_key(srv, stranger, "POST", approve, json={}).status_code == 404
    listed = as_key(srv, stranger, "GET", "/admin/v1/reviews").json()["data"]
    assert rid not in {row["request_id"] for row in listed}
    bad = srv.admin("PATCH", "/tenants/ward", json={"review_policy": "sometimes"})
    assert bad.status_code == 400 and "review policy must be" in bad.json()["error"]["message"]


def test_a_held_answer_stays_undelivered_across_a_restart(tmp_path: Path) -> None:
    with run_server(tmp_path) as first:
        admin_key, env = first.api_key, first.env
        tenant(first, "night", "hold", content="none")
        user = first.create_key("night")
        rid = ask(first, user).id
    with run_server(tmp_path, env) as again:
        again.api_key = admin_key
        got = client(again, user).chat.completions.retrieve(rid)
        assert got.choices == [] and got.model_extra is not None
        assert got.model_extra["sovllm_review"]["status"] == "pending"
        listed = cli(again, "review", "list", "--json")
        assert listed.returncode == 0 and rid in listed.stdout
        done = cli(again, "review", "approve", rid)
        assert done.returncode == 0, done.stderr
        approved = client(again, user).chat.completions.retrieve(rid)
        assert approved.choices[0].message.content
