"""The ids an engine counted for a request are handed to its submit() only if still valid."""

from __future__ import annotations

import dataclasses

from sovllm.engines.base import ChatMessage, GenerationRequest, SamplingParams
from sovllm.engines.llamacpp.tokenizer import CountedPrompts


def chat(rid: str, text: str) -> GenerationRequest:
    return GenerationRequest(rid, SamplingParams(), messages=[ChatMessage("user", text)])


def test_the_ids_come_back_once_for_the_same_request() -> None:
    memo = CountedPrompts()
    req = chat("r1", "hello")
    memo.put(req, [1, 2, 3])
    # The gateway names the tenant after counting: a new object, the same content.
    assert memo.take(dataclasses.replace(req, flow="hospital", weight=2.0)) == [1, 2, 3]
    assert memo.take(req) is None  # handed over: a second submit tokenizes
    assert len(memo) == 0


def test_changed_content_is_tokenized_again() -> None:
    memo = CountedPrompts()
    req = chat("r1", "my mail is ada@example.org")
    memo.put(req, [1, 2, 3])
    masked = dataclasses.replace(req, messages=[ChatMessage("user", "my mail is <EMAIL>")])
    assert memo.take(masked) is None
    # A list changed in place after counting is caught too: the memo kept a copy.
    completion = GenerationRequest("r2", SamplingParams(), prompt=[5, 6, 7])
    memo.put(completion, [5, 6, 7])
    assert isinstance(completion.prompt, list)
    completion.prompt[0] = 9
    assert memo.take(completion) is None
    messages = [ChatMessage("user", "a")]
    listed = GenerationRequest("r3", SamplingParams(), messages=messages)
    memo.put(listed, [4])
    messages.append(ChatMessage("user", "b"))
    assert memo.take(listed) is None


def test_another_request_id_gets_nothing() -> None:
    memo = CountedPrompts()
    memo.put(chat("r1", "hello"), [1, 2])
    assert memo.take(chat("r2", "hello")) is None
    assert memo.take(chat("r1", "hello")) == [1, 2]


def test_requests_never_submitted_are_forgotten_oldest_first() -> None:
    memo = CountedPrompts(capacity=3)
    for i in range(5):  # refused by a quota, or sent to another replica
        memo.put(chat(f"r{i}", "x"), [i])
    assert len(memo) == 3
    assert memo.take(chat("r1", "x")) is None
    assert memo.take(chat("r2", "x")) == [2]
    assert memo.take(chat("r4", "x")) == [4]
