"""Access logging against a real server: audited reads, refused sign-ins, the per-source limit.

Every test client is local, so a second "source" is a second loopback address: httpx binds the
client's end of the connection to 127.0.0.2 (all of 127.0.0.0/8 is this machine), and the
server sees that address as the peer, as it would see another host.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MODEL_ID, Server, run_server
from tests.integration.test_audit import sovllm

BAD = "sk-sovllm-Bad0"  # the prefix of the bad keys below: what the log may show of them


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from `address` (a loopback alias)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def of_kind(data_dir: Path, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "sovllm.db") as conn:
        rows = conn.execute(
            "SELECT body FROM audit_entries WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [json.loads(b) for (b,) in rows]


def totals(groups: list[dict[str, object]]) -> dict[tuple[object, object], int]:
    """Refusals per (key prefix, status), whichever minute's group they fell in."""
    out: dict[tuple[object, object], int] = {}
    for g in groups:
        key = (g["key_prefix"], g["status"])
        out[key] = out.get(key, 0) + int(str(g["count"]))
    return out


def test_each_audited_read_is_an_entry_with_its_actor(server: Server) -> None:
    user = server.create_key("acc-ward")
    assert (
        server.admin("PATCH", "/tenants/acc-ward", json={"content_policy": "full"}).status_code
        == 200
    )
    chat = httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {user}"},
        json={
            "model": MODEL_ID,
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "Hello"}],
        },
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    rid = chat.json()["id"]
    auditor = server.create_key("acc-dpo", role="auditor")
    as_auditor = {"Authorization": f"Bearer {auditor}"}
    me = httpx.get(f"{server.base_url}/me", headers=as_auditor).json()
    dpo = {"tenant": "acc-dpo", "key_id": me["key_id"], "role": "auditor"}
    admin_me = httpx.get(f"{server.base_url}/me", headers=server.auth).json()
    admin = {"tenant": "admin", "key_id": admin_me["key_id"], "role": "admin"}

    reads = [  # path, params, who, resource, query as logged, how many results
        ("/keys", {"tenant": "acc-dpo"}, server.auth, admin, "keys", {"tenant": "acc-dpo"}, 1),
        (
            "/usage",
            {"tenant": "acc-ward", "since": "2020-01-01"},
            as_auditor,
            dpo,
            "usage",
            {"tenant": "acc-ward", "since": "2020-01-01"},
            1,
        ),
        (
            "/audit/entries",
            {"request_id": rid},
            as_auditor,
            dpo,
            "audit.entries",
            {"request_id": rid, "limit": 100},
            2,
        ),
        ("/audit/checkpoint", {}, as_auditor, dpo, "audit.checkpoint", {}, 1),
        (f"/audit/content/{rid}", {}, as_auditor, dpo, "content", {"request_id": rid}, 2),
        ("/access/denied", {"limit": 7}, as_auditor, dpo, "access.denied", {"limit": 7}, None),
    ]
    for path, params, headers, who, resource, query, count in reads:
        before = len(of_kind(server.data_dir, "access.read"))
        r = httpx.get(f"{server.url}/admin/v1{path}", params=params, headers=headers, timeout=30)
        assert r.status_code == 200, (path, r.text)
        logged = of_kind(server.data_dir, "access.read")
        assert len(logged) == before + 1, path  # one entry per read, durable before the answer
        entry = logged[-1]
        assert entry["actor"] == who and entry["resource"] == resource, entry
        assert entry["query"] == query, entry
        data = r.json().get("data", r.json().get("parts"))
        assert entry["count"] == (count if count is not None else len(data)), (path, entry)
        assert auditor not in json.dumps(entry) and server.api_key not in json.dumps(entry)
    # A read of content that was never kept is an attempt on record too (and a 404).
    r = httpx.get(f"{server.url}/admin/v1/audit/content/chatcmpl-nothing", headers=as_auditor)
    assert r.status_code == 404
    attempt = of_kind(server.data_dir, "access.read")[-1]
    assert attempt["query"] == {"request_id": "chatcmpl-nothing"} and attempt["count"] == 0

    # The polled status routes hold no personal data and are not access entries.
    before = len(of_kind(server.data_dir, "access.read"))
    for path in ("/pool", "/stops", "/audit/verify/last"):
        assert httpx.get(f"{server.url}/admin/v1{path}", headers=as_auditor).status_code in {
            200,
            404,
        }
    assert httpx.get(f"{server.url}/metrics", headers=as_auditor).status_code == 200
    assert len(of_kind(server.data_dir, "access.read")) == before


def test_command_line_reads_are_entries_with_the_local_user(server: Server) -> None:
    key = server.create_key("acc-cli")
    chat = httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL_ID, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=60,
    )
    rid = chat.json()["id"]
    commands = [  # arguments, resource, query
        (["keys", "list", "--tenant", "acc-cli", "--json"], "keys", {"tenant": "acc-cli"}),
        (["usage", "--tenant", "acc-cli", "--json"], "usage", {"tenant": "acc-cli"}),
        (["audit", "prove", rid], "audit.prove", {"request_id": rid}),
        (["audit", "export"], "audit.export", {}),
        (["compliance", "records", "--format", "json"], "records.art30", {"format": "json"}),
    ]
    for args, resource, query in commands:
        before = len(of_kind(server.data_dir, "access.read"))
        out = sovllm(server, *args)
        assert out.returncode == 0, out.stderr
        logged = of_kind(server.data_dir, "access.read")
        assert len(logged) == before + 1, args
        entry = logged[-1]
        assert set(entry["actor"]) == {"cli", "host"}, entry
        assert (entry["resource"], entry["query"]) == (resource, query), entry
        if resource == "audit.prove":
            assert entry["count"] == len(json.loads(out.stdout)["entries"]) == 2
        if resource == "audit.export":  # every entry line that was written, counted
            lines = [json.loads(line) for line in out.stdout.splitlines()[1:]]
            assert entry["count"] == sum(1 for line in lines if "seq" in line) > 2


def test_x_forwarded_for_is_not_trusted_by_default(server: Server) -> None:
    """uvicorn's own default trusts it from 127.0.0.1; the counts must not be that easy to dodge."""
    spoofed = {"Authorization": "Bearer sk-sovllm-Xff0" + "0" * 36, "X-Forwarded-For": "10.9.9.9"}
    assert httpx.get(f"{server.base_url}/models", headers=spoofed).status_code == 401
    listed = server.admin("GET", "/access/denied").json()["data"]
    assert [g["source"] for g in listed if g["key_prefix"] == "sk-sovllm-Xff0"] == ["127.0.0.1"]
    assert not [g for g in listed if g["source"] == "10.9.9.9"]
    short = {"Authorization": "Bearer nope-nope-nope"}  # not one of ours, and short
    assert httpx.get(f"{server.base_url}/models", headers=short).status_code == 401
    listed = server.admin("GET", "/access/denied").json()["data"]
    assert {"key_prefix": "nope", "reasons": {"malformed": 1}}.items() <= next(
        g for g in listed if g["key_prefix"] == "nope"
    ).items()  # at most a third of what was sent


def test_a_burst_of_bad_keys_is_aggregated_and_then_its_source_is_refused(tmp_path: Path) -> None:
    env = {
        "SOVLLM_SECURITY__AUTH_FAILURES_PER_MINUTE": "5",
        "SOVLLM_SECURITY__TRUSTED_PROXIES": '["127.0.0.5"]',
    }
    with run_server(tmp_path, env) as srv:
        good = srv.create_key("acc-burst")
        valid = {"Authorization": f"Bearer {good}"}
        # X-Forwarded-For from an address that is not a trusted proxy changes nothing.
        spoof = {"X-Forwarded-For": "10.9.9.9"}
        with from_address("127.0.0.2") as attacker:
            for i in range(4):
                r = attacker.get(
                    f"{srv.base_url}/models",
                    headers={"Authorization": f"Bearer {BAD}{i:036d}", **spoof},
                )
                assert r.status_code == 401, r.text
            chat = attacker.post(
                f"{srv.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {BAD}{9:036d}"},
                json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert chat.status_code == 401  # the fifth failure, on the inference path
            # Past the limit: refused before the key is looked at, even a valid one.
            for path in ("/models", "/me"):
                r = attacker.get(f"{srv.base_url}{path}", headers=valid)
                assert r.status_code == 429, r.text
                error = r.json()["error"]
                assert error["type"] == "rate_limit_error"
                assert error["code"] == "too_many_authentication_failures"
                assert "127.0.0.2" in error["message"] and error["param"] is None
                assert 1 <= int(r.headers["Retry-After"]) <= 60
            r = attacker.post(
                f"{srv.base_url}/chat/completions",
                headers=valid,
                json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert r.status_code == 429
        # Another source with the same valid key is served.
        with from_address("127.0.0.3") as neighbour:
            assert neighbour.get(f"{srv.base_url}/models", headers=valid).status_code == 200
        assert httpx.get(f"{srv.base_url}/models", headers=valid).status_code == 200
        # A trusted proxy names the client: the failure counts for that client.
        with from_address("127.0.0.5") as proxy:
            r = proxy.get(f"{srv.base_url}/models", headers={"X-Forwarded-For": "10.7.7.7"})
            assert r.status_code == 401

        # The console's list: the open minute's groups (pending), then those in the log.
        listed = srv.admin("GET", "/access/denied").json()["data"]
        assert totals([g for g in listed if g["source"] == "127.0.0.2"]) == {
            (BAD, 401): 5,
            ("*", 429): 3,
        }
    # Shut down: the open minute's groups are written before the log closes.
    by_source: dict[str, list[dict[str, Any]]] = {}
    for entry in of_kind(srv.data_dir, "access.denied"):
        by_source.setdefault(str(entry["source"]), []).append(entry)
    assert "10.9.9.9" not in by_source and "127.0.0.5" not in by_source
    assert [(e["key_prefix"], e["count"]) for e in by_source["10.7.7.7"]] == [("none", 1)]
    burst = by_source["127.0.0.2"]
    assert totals(burst) == {(BAD, 401): 5, ("*", 429): 3}
    # 8 refusals, 2 groups: 2 entries, or up to 4 if a minute closed during the burst.
    assert len(burst) <= 4
    for e in burst:
        assert e["reasons"] == (
            {"unknown": e["count"]} if e["status"] == 401 else {"throttled": e["count"]}
        )
        assert set(e["paths"]) <= {"/v1/models", "/v1/me", "/v1/chat/completions"}
    raw = b"".join(p.read_bytes() for p in srv.data_dir.glob("sovllm.db*"))
    assert f"{BAD}{0:036d}".encode() not in raw and good.encode() not in raw  # never a whole key
