"""A streamed chunk in the middle of an answer is encoded once but for its text
(`openai_routes._TextEvent`): its bytes must be the ones the response models would make.

The real app over uvicorn on loopback and a scripted engine whose tokens are the texts JSON
escapes differently: quotes, backslashes, control characters, non-ASCII, and the mark the
frame is cut at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovllm.api.schemas import (
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionChunk,
    Delta,
)
from tests.scripted_engine import MODEL, ScriptedEngine
from tests.unit.test_failsafe import serve

TEXTS = (
    "Hello",
    ' "quoted"',
    " back\\slash",
    "\nline\r\n",
    "\ttab",
    " é ü 中文",
    " 😀",
    "\x00\x1f\x7f",
    "</script>",
    "data: [DONE]\n\n",
    "\x00sovllm-text\x00",
    " ",
)


def encoded(body: dict[str, Any]) -> bytes:
    """What the app's own encoder makes of a model's body (compact, UTF-8 as is)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def events(r: httpx.Response) -> list[bytes]:
    raw = r.read()
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    return [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e.startswith(b"data: {")]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("route", ["chat", "completion"])
def test_middle_chunks_are_the_models_bytes(
    tmp_path: Path, route: str, include_usage: bool
) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if route == "chat":
        body["messages"] = [{"role": "user", "content": "Hi"}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = "Hi"
        path = "/v1/completions"
    with (
        serve(tmp_path, ScriptedEngine(texts=TEXTS)) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as http,
        http.stream("POST", path, json=body) as r,
    ):
        assert r.status_code == 200, r.read()
        got = events(r)
    first = json.loads(got[0])
    ids = {k: first[k] for k in ("id", "created", "model", "system_fingerprint")}
    middle = got[1 : len(TEXTS)]  # the first token's chunk carries the role and provenance
    assert len(middle) == len(TEXTS) - 1
    for raw, text in zip(middle, TEXTS[1:], strict=True):
        chunk: ChatCompletionChunk | CompletionChunk
        if route == "chat":
            chunk = ChatCompletionChunk(**ids, choices=[ChatChunkChoice(delta=Delta(content=text))])
        else:
            chunk = CompletionChunk(
                **ids, choices=[CompletionChoice(text=text, finish_reason=None)]
            )
        want = chunk.body()
        if not include_usage:
            want.pop("usage")
        assert raw == encoded(want)
    # And a client reads the texts back, in order, as sent.
    if route == "chat":
        texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in got[:-1]]
    else:
        texts = [json.loads(e)["choices"][0]["text"] for e in got[:-1]]
    if include_usage:
        texts = texts[:-1]  # the usage chunk has no choices; the final chunk's text is empty
    assert "".join(t or "" for t in texts) == "".join(TEXTS)
