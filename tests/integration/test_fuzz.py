"""Every route of /openapi.json, driven by schemathesis with generated requests (valid and
invalid), against a real server on the real model, with a real key of each role and none.

What must hold for every case: no answer is 5xx; every 4xx is in OpenAI's error shape; a `user`
key, or none, never gets past /admin/v1 (401 or 403). At the end the server is healthy, a real
chat works, the audit log verifies and the server logged no unexpected error.

`make test` runs 500 cases; scripts/fuzz.sh runs 10,000 (SOVLLM_FUZZ_CASES), and
SOVLLM_FUZZ_SEED replays a run. Generated chats are held to a few tokens (see `_bounded`): the
point is the API's parsing, not the model's speed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from schemathesis import GenerationMode

from tests.conftest import MODEL_ID, Server, run_server

CASES = int(os.environ.get("SOVLLM_FUZZ_CASES", "500"))
SEED = int(os.environ.get("SOVLLM_FUZZ_SEED") or secrets.randbelow(2**32))
REPORT = os.environ.get("SOVLLM_FUZZ_REPORT")
GENERATED_TOKENS = 4
"""What a generated chat may ask for; values far past the context (a quick 400) are kept."""
FAR_PAST_CONTEXT = 1_000_000
ROLES = ("admin", "auditor", "reviewer", "user", None)
STAFF = {"admin", "auditor", "reviewer"}
"""The roles that may pass /admin's gate (api/admin_gate.py); each route then checks its own."""
INFERENCE = ("/v1/chat/completions", "/v1/completions")


def error_shape_problem(response: Any) -> str | None:
    """What is wrong with a 4xx body against OpenAI's {"error": {message, type, param, code}}."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"not OpenAI's error shape: {str(body)[:300]}"
    if not (isinstance(error["message"], str) and error["message"]):
        return "no message"
    if not isinstance(error["type"], str):
        return "type is not a string"
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return "param or code is neither a string nor null"
    return None


def _bounded(case: Any) -> None:
    """Hold a generated chat or completion to a few tokens, leaving invalid values as they are."""
    body = case.body
    if case.path not in INFERENCE or not isinstance(body, dict):
        return
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and GENERATED_TOKENS < value < FAR_PAST_CONTEXT
        ):
            body[name] = GENERATED_TOKENS
    if not isinstance(body.get("max_completion_tokens"), int):
        body.setdefault("max_tokens", GENERATED_TOKENS)
        if body["max_tokens"] is None:
            body["max_tokens"] = GENERATED_TOKENS


@dataclass
class Fuzzer:
    server: Server
    keys: dict[str | None, str | None]
    cases: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def send(self, case: Any) -> None:
        role = ROLES[self.cases % len(ROLES)]
        self.cases += 1
        _bounded(case)
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        key = self.keys[role]
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        case.headers = headers
        where = f"{case.method} {case.formatted_path} as {role or 'no key'}"
        try:
            response = case.call(base_url=self.server.url, session=self.session, timeout=60)
        except requests.RequestException as exc:
            self.failures.append(f"{where}: no answer ({exc!r})\n{case.as_curl_command()}")
            return
        status = response.status_code
        self.statuses[(case.path, status)] += 1
        problem = None
        if status >= 500:
            problem = f"{status}: {response.text[:300]}"
        elif status >= 400 and case.method != "HEAD":
            problem = error_shape_problem(response)
        admin = role not in STAFF and case.path.startswith("/admin/")
        if problem is None and admin and status not in (401, 403):
            problem = f"a {role or 'keyless'} request got {status} from an admin route"
        if problem is not None:
            self.failures.append(f"{where}: {problem}\n{case.as_curl_command()}")
        if case.path == "/admin/v1/stop" and status == 200:
            self._resume(response.json())

    def _resume(self, stop: dict[str, Any]) -> None:
        """A generated stop is lifted at once: the next cases are about the API, not a stop."""
        body = {"scope": stop["scope"], "target": stop.get("target") or None}
        r = self.server.admin("POST", "/resume", json=body)
        assert r.status_code == 200, r.text

    def operation(self, op: Any, mode: GenerationMode, examples: int, seed: int) -> None:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            self.send(case)

        try:
            run()
        except Exception as exc:  # e.g. no parameter to make invalid: nothing to negate
            what = f"{op.method.upper()} {op.path} {mode.value}: {type(exc).__name__}"
            if what not in self.not_generated:
                self.not_generated.append(what)

    def run(self, operations: list[Any], total: int, rng: random.Random) -> None:
        """Passes over every operation, valid and invalid cases, until `total` are sent."""
        while self.cases < total:
            before = self.cases
            per_op = max(1, -(-(total - self.cases) // (2 * len(operations))))
            for op in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    left = total - self.cases
                    if left > 0:
                        self.operation(op, mode, min(per_op, left), rng.randrange(2**32))
            assert self.cases > before, f"nothing could be generated: {self.not_generated}"


def test_every_route_answers_generated_requests_in_shape(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Many 401s and 403s from one address are the point here, not an attack to throttle.
    env = {"SOVLLM_SECURITY__AUTH_FAILURES_PER_MINUTE": "100000000"}
    with run_server(tmp_path_factory.mktemp("fuzz"), env) as server:
        keys: dict[str | None, str | None] = {None: None}
        for role in ROLES[:-1]:
            assert role is not None
            # Names the generator will not hit, so no generated change touches these keys.
            keys[role] = server.create_key(f"fuzz-{role}-{secrets.token_hex(8)}", role)
        raw = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(raw)
        operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 20, [f"{o.method} {o.path}" for o in operations]
        fuzzer = Fuzzer(server, keys)
        started = time.monotonic()
        fuzzer.run(operations, CASES, random.Random(SEED))
        elapsed = time.monotonic() - started
        summary = {
            "cases": fuzzer.cases,
            "seed": SEED,
            "operations": len(operations),
            "seconds": round(elapsed, 1),
            "failures": len(fuzzer.failures),
            "statuses": dict(Counter(status for (_, status) in fuzzer.statuses.elements())),
            "not_generated": fuzzer.not_generated,
        }
        print(json.dumps(summary, indent=1))
        if REPORT:
            Path(REPORT).write_text(json.dumps(summary, indent=1) + "\n")
        assert not fuzzer.failures, f"{len(fuzzer.failures)} failures (seed {SEED}):\n" + (
            "\n\n".join(fuzzer.failures[:20])
        )
        assert fuzzer.cases >= CASES
        _still_healthy(server, keys)


def _still_healthy(server: Server, keys: dict[str | None, str | None]) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    client = openai.OpenAI(base_url=server.base_url, api_key=keys["user"], max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.choices[0].message.content
    verified = server.admin("POST", "/audit/verify")
    assert verified.status_code == 200 and not verified.json()["problems"], verified.text
    log = server.log.read_text()
    assert "unexpected error" not in log and "Traceback" not in log, log[-3000:]
