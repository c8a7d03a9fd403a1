"""Personal data through every endpoint, streaming on and off: never in any sink in the clear."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import MODEL_ID, Server, run_server, wait_until
from tests.integration.test_audit import entries, sovllm

CORPUS = [
    "mario.rossi@example.com",
    "+39 06 1234 5678",
    "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111",
    "192.168.1.20",
    "2001:db8::1",
    "RSSMRA85T10A562S",
    "12345678Z",
    "111222333",
    "44051401359",
]


def test_a_corpus_of_personal_data_leaves_no_trace_in_the_clear(server: Server) -> None:
    key = server.create_key("hospital-ward")
    assert server.admin("PATCH", "/tenants/hospital-ward",
                        json={"content_policy": "redacted"}).status_code == 200  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    prompt = "Summarise: " + "; ".join(CORPUS)
    request_ids = []
    for stream in (False, True):
        for path, body in (
            ("/chat/completions", {"messages": [{"role": "user", "content": prompt}]}),
            ("/completions", {"prompt": prompt}),
        ):
            payload = {"model": MODEL_ID, "max_tokens": 8, "stream": stream,
                       "user": "mario.rossi@example.com", **body}  # fmt: skip
            with httpx.stream("POST", f"{server.base_url}{path}", json=payload,
                              headers=headers, timeout=60) as r:  # fmt: skip
                assert r.status_code == 200
                request_ids.append(r.headers["x-request-id"])
                for _ in r.iter_lines():
                    pass
    # An auditor sees what the policy kept: masked.
    auditor = server.create_key("dpo-office", role="auditor")
    as_auditor = {"Authorization": f"Bearer {auditor}"}
    kept = httpx.get(f"{server.url}/admin/v1/audit/content/{request_ids[0]}",
                     headers=as_auditor, timeout=30)  # fmt: skip
    assert kept.status_code == 200, kept.text
    prompt_part = next(p for p in kept.json()["parts"] if p["part"] == "prompt")
    assert "[EMAIL]" in prompt_part["text"] and "[CODICE_FISCALE]" in prompt_part["text"]
    # Every sink: the database file (and its WAL), and the server's log output.
    data = b"".join(p.read_bytes() for p in server.data_dir.glob("sovllm.db*"))
    logs = server.log.read_bytes()
    for value in CORPUS:
        assert value.encode() not in data, value
        assert value.encode() not in logs, value
    # Erase the subject: the content becomes unreadable, the log still verifies, and the key's
    # bytes are gone from the files of the running server's database.
    with sqlite3.connect(server.data_dir / "sovllm.db") as conn:
        keys = dict(conn.execute("SELECT subject, wrapped_key FROM subject_keys").fetchall())
    conn.close()
    r = httpx.post(f"{server.url}/admin/v1/privacy/erase", json={"subject": "mario.rossi@example.com"},
                   headers=as_auditor, timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.json()["content_records_made_unreadable"] >= 4
    assert r.json()["signature"] and r.json()["old_key_bytes"].startswith("nowhere")
    erased_key = keys[r.json()["subject"]].encode()
    assert erased_key not in b"".join(p.read_bytes() for p in server.data_dir.glob("sovllm.db*"))
    after = httpx.get(f"{server.url}/admin/v1/audit/content/{request_ids[0]}",
                      headers=as_auditor, timeout=30).json()  # fmt: skip
    assert all(p["text"] is None for p in after["parts"])
    check = sovllm(server, "audit", "verify")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_tenant_can_require_masking_before_the_model(server: Server) -> None:
    key = server.create_key("masked-ward")
    r = server.admin("PATCH", "/tenants/masked-ward",
                     json={"mask_prompts": True, "content_policy": "full"})  # fmt: skip
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL_ID, "max_tokens": 2,
            "messages": [{"role": "user", "content": "Write to mario.rossi@example.com"}]}  # fmt: skip
    ok = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=60)
    assert ok.status_code == 200
    # What reached the model (kept under the "full" policy) carries the mask, not the address.
    auditor = server.create_key("masked-dpo", role="auditor")
    kept = httpx.get(f"{server.url}/admin/v1/audit/content/{ok.json()['id']}",
                     headers={"Authorization": f"Bearer {auditor}"}, timeout=30)  # fmt: skip
    prompt = next(p["text"] for p in kept.json()["parts"] if p["part"] == "prompt")
    assert "[EMAIL]" in prompt and "mario.rossi" not in prompt
    # Token ids cannot be checked: refused, fail closed.
    ids = {"model": MODEL_ID, "prompt": [1, 2, 3], "max_tokens": 2}
    refused = httpx.post(f"{server.base_url}/completions", json=ids, headers=headers, timeout=60)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "masking_failed"


def test_the_retention_job_purges_expired_content(tmp_path: Path) -> None:
    env = {"SOVLLM_RETENTION__CONTENT_DAYS": "0", "SOVLLM_RETENTION__PURGE_EVERY_S": "0.2"}
    with run_server(tmp_path, env) as srv:
        srv.admin("PATCH", "/tenants/admin", json={"content_policy": "full"})
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        r = httpx.post(f"{srv.base_url}/chat/completions", json=body, headers=srv.auth, timeout=60)
        assert r.status_code == 200
        deadline = time.monotonic() + 30

        def purged() -> int:
            data = httpx.get(f"{srv.url}/admin/v1/audit/entries", headers=srv.auth).json()["data"]
            return sum(e["entry"]["content_records"] for e in data
                       if e["entry"]["kind"] == "privacy.purge")  # fmt: skip

        # Polls the server's own audit log, with a deadline: prompt and answer were kept,
        # then purged by the job.
        while purged() < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        gone = httpx.get(f"{srv.url}/admin/v1/audit/content/{r.json()['id']}", headers=srv.auth)
        assert gone.status_code == 404
        assert sovllm(srv, "audit", "verify").returncode == 0


FAULTY_DETECTOR = '''"""A personal-data detector that fails, quoting its input as a careless one would."""


def detect(text):
    raise RuntimeError("detector cannot parse: " + text)
'''
PATIENT = "Zanzibar Quattrocchi"
SECRET = f"Discharge letter for {PATIENT}, reachable at zq.patient@example.org"


def test_a_failing_detector_fails_closed(tmp_path: Path) -> None:
    # A real fault: a detector added through the privacy.detectors setting raises, on every
    # text, with the text in its message.
    (tmp_path / "faulty_pii.py").write_text(FAULTY_DETECTOR)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {"SOVLLM_PRIVACY__DETECTORS": '["faulty_pii:detect"]', "PYTHONPATH": pythonpath}
    with run_server(tmp_path / "srv", env) as srv:
        masked = srv.create_key("masked-ward")
        rule = {"mask_prompts": True, "content_policy": "full"}
        assert srv.admin("PATCH", "/tenants/masked-ward", json=rule).status_code == 200
        redacted = srv.create_key("records-ward")
        assert srv.admin("PATCH", "/tenants/records-ward",
                         json={"content_policy": "redacted"}).status_code == 200  # fmt: skip
        engine_prompts = srv.metric("prefix_cache_queries_total")  # counted by the engine

        # mask_prompts: refused, 503 in OpenAI's shape, on both routes, streaming or not.
        client = openai.OpenAI(base_url=srv.base_url, api_key=masked, max_retries=0)
        refused = []
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as chat:
                client.chat.completions.create(
                    model=MODEL_ID, max_tokens=4, stream=stream,
                    messages=[{"role": "user", "content": SECRET}],
                )  # fmt: skip
            with pytest.raises(openai.InternalServerError) as completion:
                client.completions.create(model=MODEL_ID, prompt=SECRET, max_tokens=4,
                                          stream=stream)  # fmt: skip
            for err in (chat.value, completion.value):
                assert err.status_code == 503 and err.code == "masking_failed"
                assert err.type == "server_error"
                assert "personal-data check failed" in err.message
                assert "not sent to the model" in err.message and PATIENT not in err.message
                refused.append(re.search(r"\b(?:chatcmpl|cmpl)-[0-9a-f]{32}\b", err.message))
        refused_ids = [m.group() for m in refused if m is not None]
        assert len(refused_ids) == 4
        assert srv.metric("prefix_cache_queries_total") == engine_prompts  # no model saw them

        # redacted without mask_prompts: answered, but nothing of it kept, and the log says why.
        answer = httpx.post(f"{srv.base_url}/chat/completions", timeout=60,
                            headers={"Authorization": f"Bearer {redacted}"},
                            json={"model": MODEL_ID, "max_tokens": 4,
                                  "messages": [{"role": "user", "content": SECRET}]})  # fmt: skip
        assert answer.status_code == 200, answer.text
        answered = answer.json()["id"]
        assert srv.metric("prefix_cache_queries_total") > engine_prompts  # the counter counts

        def not_kept() -> list[str]:
            return [str(e["part"]) for e in entries(srv, answered)
                    if e["kind"] == "request.content_not_kept"]  # fmt: skip

        wait_until(lambda: sorted(not_kept()) == ["prompt", "response"],
                   "request.content_not_kept entries for prompt and response")  # fmt: skip
        (begin,) = [e for e in entries(srv, answered) if e["kind"] == "request.begin"]
        assert begin["policy"]["pii"] == "detection_failed"  # type: ignore[index]
        assert begin["content"]["policy"] == "redacted"  # type: ignore[index]
        gone = httpx.get(f"{srv.url}/admin/v1/audit/content/{answered}", headers=srv.auth,
                         timeout=30)  # fmt: skip
        assert gone.status_code == 404  # nothing stored

        for rid in refused_ids:
            (rejected,) = entries(srv, rid)
            assert rejected["kind"] == "request.rejected"
            assert rejected["policy"]["pii"] == "masking_failed"  # type: ignore[index]
        check = sovllm(srv, "audit", "verify")
        assert check.returncode == 0, check.stdout + check.stderr
        # Every sink: the database (file, WAL, shared memory) and the server's log.
        data = b"".join(p.read_bytes() for p in srv.data_dir.glob("sovllm.db*"))
        logs = srv.log.read_bytes()
        for value in (PATIENT, "zq.patient@example.org"):
            assert value.encode() not in data, value
            assert value.encode() not in logs, value
        # The log names the failure without the text: the detector and its exception's type.
        assert b"'faulty_pii:detect' raised RuntimeError" in logs
        assert all(rid.encode() in logs for rid in refused_ids)
