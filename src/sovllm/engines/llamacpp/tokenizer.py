"""A request's prompt as token ids, and a GGUF model's vocabulary without its weights.

The gateway of a replica pool counts prompt tokens (for quotas and context checks) with the
same tokenizer and template as the workers, without loading the model's tensors. An engine in
the gateway's process keeps the ids it counted (`CountedPrompts`), so a request is tokenized
once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import llama_cpp as C

from sovllm.engines.base import ChatMessage, GenerationRequest, InvalidRequestError
from sovllm.engines.llamacpp.chat_template import ChatTemplate
from sovllm.engines.llamacpp.model import ModelLoadError, _init_backend, tokenize

Tokenize = Callable[..., list[int]]


def request_tokens(
    request: GenerationRequest, template: ChatTemplate, tokenize: Tokenize, n_vocab: int
) -> list[int]:
    """The prompt token ids of a chat or completion request, as the engine will run them."""
    biased = next((t for t, _ in request.sampling.logit_bias if not 0 <= t < n_vocab), None)
    if biased is not None:  # llama.cpp would skip it without a word
        raise InvalidRequestError(
            f"logit_bias token id {biased} is outside the vocabulary (0..{n_vocab - 1})",
            "logit_bias",
        )
    if request.messages is not None:
        text = template.render(request.messages)
        # The template writes any BOS itself; parse its special tokens (<|im_start|>...).
        return tokenize(text, add_special=False, parse_special=True)
    prompt = request.prompt
    if prompt is None:
        raise InvalidRequestError("either messages or prompt is required", "prompt")
    if isinstance(prompt, str):
        return tokenize(prompt, add_special=True, parse_special=False)
    tokens = list(prompt)
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise InvalidRequestError(
            f"token id {bad} is outside the vocabulary (0..{n_vocab - 1})", "prompt"
        )
    return tokens


class CountedPrompts:
    """The prompt ids of requests counted and not yet submitted, so submit() reuses them.

    The gateway counts a request's tokens (admission needs the number) before it submits it.
    An id is handed back only for a request of the same id and the same content: one whose
    messages changed in between (personal-data masking replaces them) is tokenized again,
    never run with the ids of the text it had before. Bounded, oldest out first: a counted
    request may never come (refused by a quota, routed to another replica).
    """

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()  # counted and submitted from any event loop's thread
        self._ids: OrderedDict[str, tuple[_Content, list[int]]] = OrderedDict()

    def put(self, request: GenerationRequest, ids: list[int]) -> None:
        with self._lock:
            self._ids[request.request_id] = (_content(request), ids)
            self._ids.move_to_end(request.request_id)
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)

    def take(self, request: GenerationRequest) -> list[int] | None:
        """The ids counted for this request, if its content is still what was counted."""
        with self._lock:
            entry = self._ids.pop(request.request_id, None)
        if entry is None:
            return None
        content, ids = entry
        return ids if content == _content(request) else None

    def __len__(self) -> int:
        return len(self._ids)


_Content = tuple[tuple[ChatMessage, ...] | None, str | tuple[int, ...] | None]


def _content(request: GenerationRequest) -> _Content:
    """What a request's tokens depend on, as an immutable copy (a caller's list may change)."""
    messages = None if request.messages is None else tuple(request.messages)
    prompt = request.prompt
    frozen = prompt if prompt is None or isinstance(prompt, str) else tuple(prompt)
    return messages, frozen


class Tokenizer:
    """Loads only the vocabulary of a GGUF file (llama.cpp's vocab_only): milliseconds, no RAM."""

    def __init__(self, path: Path) -> None:
        _init_backend()
        params = C.llama_model_default_params()
        params.vocab_only = True
        self._model = C.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ModelLoadError(f"llama.cpp could not read the vocabulary of {path}")
        self._vocab = C.llama_model_get_vocab(self._model)
        self.n_vocab: int = C.llama_vocab_n_tokens(self._vocab)
        raw = C.llama_model_chat_template(self._model, None)
        self.template = ChatTemplate(
            raw.decode("utf-8") if raw else None,
            self._text(C.llama_vocab_bos(self._vocab)),
            self._text(C.llama_vocab_eos(self._vocab)),
        )

    def _text(self, token: int) -> str:
        if token < 0:
            return ""
        text = C.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return tokenize(self._vocab, text, add_special=add_special, parse_special=parse_special)

    def count(self, request: GenerationRequest) -> int:
        return len(request_tokens(request, self.template, self.tokenize, self.n_vocab))

    def close(self) -> None:
        if self._model:
            C.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()
