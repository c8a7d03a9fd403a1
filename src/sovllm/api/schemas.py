"""OpenAI request and response schemas, with OpenAI's names (and vLLM's extensions)."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

MAX_STOP_STRINGS = 16
MAX_MESSAGES = 2048
"""OpenAI's own limit; more messages than that cannot fit a context, and counting their tokens
(the chat template over all of them) takes seconds past a few thousand."""
INT32_MAX = 2**31 - 1
"""The engine's counts and token ids are 32-bit; larger numbers are refused, not truncated."""
INT64 = 2**63


def no_lone_surrogates(data: Any) -> None:
    """JSON may escape half a UTF-16 pair ("\\ud800"), which is no character: such a string
    cannot be encoded, tokenized or stored. Refused (400) wherever it is in a request body;
    the message names where, never the string (an answer quoting it could not be encoded).
    A loop, not recursion: the body may be nested as deep as the JSON parser allows."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                where = path if path.startswith("a key") else f"'{path or 'body'}'"
                raise ValueError(f"{where} holds a lone UTF-16 surrogate: not Unicode") from None
        elif isinstance(value, dict):
            for key, item in value.items():
                # The item's path names the key: the key is checked first (popped first).
                stack.append((item, f"{path}.{key}" if path else str(key)))
                stack.append((key, f"a key of '{path}'" if path else "a key of the body"))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do, so clients can send extras.
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        no_lone_surrogates(data)
        return data

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """An explicit null means the default, as OpenAI and vLLM read it (clients send unset
        fields as null), for the fields whose type has no null of its own; a required field
        stays required, and a field that takes null keeps it (completions' max_tokens: null
        is "to the end of the context", not the default 16)."""
        if not isinstance(data, dict):
            return data
        nullable = _defaulted_without_null(cls)
        return {k: v for k, v in data.items() if not (v is None and k in nullable)}


@functools.cache
def _defaulted_without_null(model: type[BaseModel]) -> frozenset[str]:
    """The fields with a default whose type takes no null, once per request class (not per
    request)."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if not field.is_required() and type(None) not in get_args(field.annotation)
    )


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(
        0, ge=-1, le=INT32_MAX, description="vLLM extension: 0 or -1 disables top-k."
    )
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past EOS.")
    min_tokens: int = Field(
        0, ge=0, le=INT32_MAX, description="vLLM extension: no EOS before this many."
    )
    # Accepted only where they ask for nothing this server would silently leave out: a
    # request that names tools or a JSON format gets a 400 saying so, never plain prose.
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> _SamplingFields:
        if self.top_k == -1:
            self.top_k = 0
        most = getattr(self, "max_completion_tokens", None) or self.max_tokens
        if most is not None and self.min_tokens > most:
            raise ValueError(f"min_tokens ({self.min_tokens}) is more than max_tokens ({most})")
        choice = "a function" if isinstance(self.tool_choice, dict) else self.tool_choice or "auto"
        if (self.tools or self.functions) and choice != "none":
            raise ValueError(
                "tools (function calling) are not supported by this server: leave out tools "
                "and functions, or set tool_choice to none"
            )
        if choice not in ("none", "auto"):
            raise ValueError(f"tool_choice {choice!r} needs tools, which are not supported")
        if self.function_call not in (None, "none", "auto"):
            raise ValueError("function_call needs functions, which are not supported")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise ValueError(
                f"response_format {kind!r} is not supported: this server has no constrained "
                "(JSON) decoding, so only text is"
            )
        return self

    @field_validator("n")
    @classmethod
    def _only_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            # ASCII digits only: str.isdigit() takes "²", which int() then refuses.
            digits = key.removeprefix("-")
            if not (digits.isascii() and digits.isdigit() and int(digits) <= INT32_MAX):
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    logprobs: bool = False
    top_logprobs: int | None = None

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:  # top_logprobs 0 asks for nothing, as logprobs false does
            raise ValueError("logprobs are not supported")
        return value

    @model_validator(mode="after")
    def _alias(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1, le=INT32_MAX)
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("best_of")
    @classmethod
    def _one_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (insertion) is not supported")
        return value

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("the prompt is empty")
            if isinstance(value[0], str) and len(value) != 1:
                raise ValueError("only one prompt per request is supported")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value is not None:  # 0 asks for the sampled token's own log-probability
            raise ValueError("logprobs are not supported")
        return value

    def prompt_value(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], str):
            return str(p[0])
        return p  # type: ignore[return-value]


# -- responses ---------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="Prompt tokens reused from the KV prefix cache.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI's deltas carry only what they set: the role once, then the text.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class Provenance(BaseModel):
    """AI Act Art. 50(2): the answer is marked as generated, machine-readably."""

    ai_generated: Literal[True] = True
    model: str
    weights_sha256: str
    request_id: str
    created: int


class _Answer(BaseModel):
    """What every answer and chunk carries besides its choices; sovllm's two extensions
    (`provenance`, and `sovllm_stop` when an administrator cut the answer) appear only when
    set, and a chunk's `usage` only when the client asked for it (`stream_options`)."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    provenance: Provenance | None = None
    sovllm_stop: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude={k for k in _EXTENSIONS if getattr(self, k) is None})


_EXTENSIONS = ("provenance", "sovllm_stop")


class ChatCompletion(_Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatCompletionChunk(_Answer):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(_Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunk(_Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    sha256: str = Field(description="SHA-256 of the weights file.")
    context_length: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
