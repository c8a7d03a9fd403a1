"""What a null means in a request body: the default where the field has no null of its own,
and null itself where it has one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sovllm.api.schemas import ChatCompletionRequest, CompletionRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_null_means_the_default_for_fields_without_a_null() -> None:
    nulls = dict.fromkeys(("temperature", "top_p", "top_k", "n", "stream", "logprobs"))
    body = ChatCompletionRequest.model_validate({**CHAT, **nulls, "presence_penalty": None})
    assert (body.temperature, body.top_p, body.top_k, body.n) == (1.0, 1.0, 0, 1)
    assert body.stream is False and body.logprobs is False and body.presence_penalty == 0.0


def test_a_null_max_tokens_stays_null_to_the_end_of_the_context() -> None:
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "x"})
    assert completion.max_tokens == 16  # OpenAI's default when it is left out
    nulled = CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": None})
    assert nulled.max_tokens is None


def test_a_required_field_stays_required() -> None:
    with pytest.raises(ValidationError, match="model"):
        ChatCompletionRequest.model_validate({**CHAT, "model": None})


def test_top_logprobs_zero_asks_for_nothing() -> None:
    assert ChatCompletionRequest.model_validate({**CHAT, "top_logprobs": 0}).top_logprobs == 0
    with pytest.raises(ValidationError, match="logprobs are not supported"):
        ChatCompletionRequest.model_validate({**CHAT, "top_logprobs": 1})


def test_function_call_without_functions_names_function_call() -> None:
    with pytest.raises(ValidationError, match="function_call needs functions"):
        ChatCompletionRequest.model_validate({**CHAT, "function_call": {"name": "f"}})
