"""A GGUF model's vocabulary and chat template without its weights.

The gateway of a replica pool counts prompt tokens (for quotas and context checks) with the
same tokenizer and template as the workers, without loading the model's tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import llama_cpp as C

from sovllm.engines.base import GenerationRequest, InvalidRequestError
from sovllm.engines.llamacpp.chat_template import ChatTemplate
from sovllm.engines.llamacpp.model import ModelLoadError, _init_backend, tokenize

Tokenize = Callable[..., list[int]]


def request_tokens(
    request: GenerationRequest, template: ChatTemplate, tokenize: Tokenize, n_vocab: int
) -> list[int]:
    """The prompt token ids of a chat or completion request, as the engine will run them."""
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
