"""The llama.cpp model and context, through llama-cpp-python's low-level C API.

This module is the only place that knows llama.cpp's structs; the rest of the engine sees
token ids, byte pieces and plain Python values.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as C

from sovllm.engines.llamacpp.native import BackendLoadError, load_cpu_backend

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            C.llama_log_set(_silent_log, ctypes.c_void_p(0))
            try:
                load_cpu_backend(C.llama_cpp._lib._name)
            except BackendLoadError as exc:
                raise ModelLoadError(str(exc)) from None
            C.llama_backend_init()
            _backend_ready = True


@C.llama_log_callback  # type: ignore[untyped-decorator]
def _silent_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp prints hundreds of lines per load on stderr; errors surface as return codes.
    return None


class ModelLoadError(Exception):
    pass


def check_gpu_layers(gpu_layers: int) -> None:
    """Offloading needs a llama.cpp with a GPU back-end and a GPU; without them llama.cpp would
    run every layer on the CPU and say nothing, so this says so, naming the way out."""
    _init_backend()
    if gpu_layers != 0 and not C.llama_supports_gpu_offload():
        raise ModelLoadError(
            f"engine.gpu_layers is {gpu_layers}, but the llama.cpp this process loaded "
            f"({C.llama_cpp._lib._name}) has no GPU it can offload to: point "
            "LLAMA_CPP_LIB_PATH at a llama.cpp built with a GPU back-end, or set 0"
        )


def convert(source: Path, target: Path, file_type: int, threads: int) -> bool:
    """Write `source`'s weights to `target` in another llama.cpp file type (enum llama_ftype),
    dequantizing first if need be. False if llama.cpp refused."""
    _init_backend()
    params = C.llama_model_quantize_default_params()
    params.ftype = file_type
    params.allow_requantize = True  # a quantized source: dequantize, then convert
    params.nthread = threads
    rc = C.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    return rc == 0 and target.is_file()


def tokenize(vocab: object, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
    """Token ids of `text` in a llama.cpp vocabulary."""
    data = text.encode("utf-8")
    cap = len(data) + 8
    buf = (C.llama_token * cap)()
    n = C.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


@dataclass(frozen=True)
class ContextShape:
    slots: int
    context_per_slot: int
    batch_tokens: int
    threads: int
    flash_attn: bool = False
    gpu_layers: int = 0
    """Layers offloaded to a GPU; -1: all."""


class LlamaModel:
    """A loaded GGUF model and one context whose KV cache holds `slots` separate sequences."""

    def __init__(self, path: Path, shape: ContextShape) -> None:
        check_gpu_layers(shape.gpu_layers)
        mparams = C.llama_model_default_params()
        # llama.cpp's own default offloads every layer where a GPU back-end exists: 0 means 0.
        mparams.n_gpu_layers = shape.gpu_layers if shape.gpu_layers >= 0 else 2**31 - 1
        self._model = C.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelLoadError(
                f"llama.cpp could not load the model file {path}: a truncated or damaged GGUF, "
                "or an architecture this llama.cpp does not know"
            )
        self.vocab = C.llama_model_get_vocab(self._model)
        self.n_vocab: int = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = C.llama_model_n_ctx_train(self._model)

        cparams = C.llama_context_default_params()
        cparams.n_seq_max = shape.slots
        cparams.n_ctx = shape.slots * shape.context_per_slot
        cparams.n_batch = shape.batch_tokens
        cparams.n_ubatch = shape.batch_tokens
        cparams.n_threads = shape.threads
        cparams.n_threads_batch = shape.threads
        # One KV buffer per sequence: attention then reads only its own cache. Measured on
        # 2 cores, a unified buffer makes decode ~35% slower at 64 sequences.
        cparams.kv_unified = False
        cparams.flash_attn_type = (
            C.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if shape.flash_attn
            else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        self.ctx = C.llama_init_from_model(self._model, cparams)
        if not self.ctx:
            C.llama_model_free(self._model)
            raise ModelLoadError(
                f"llama.cpp could not create a context of {shape.slots} x "
                f"{shape.context_per_slot} tokens for {path} (out of memory?)"
            )
        self.memory = C.llama_get_memory(self.ctx)
        self.context_per_slot: int = C.llama_n_ctx_seq(self.ctx)
        self.n_batch: int = C.llama_n_batch(self.ctx)
        self._eog = frozenset(t for t in range(self.n_vocab) if C.llama_vocab_is_eog(self.vocab, t))
        self._piece_buf = ctypes.create_string_buffer(256)
        self._closed = False

    # -- vocabulary ---------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return tokenize(self.vocab, text, add_special=add_special, parse_special=parse_special)

    def piece(self, token: int) -> bytes:
        """The bytes of one token; special tokens render as nothing."""
        n = C.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, big, -n, 0, False)
            return big.raw[:n]
        return self._piece_buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return token in self._eog

    @property
    def eog_tokens(self) -> frozenset[int]:
        return self._eog

    def token_text(self, token: int) -> str:
        text = C.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    @property
    def bos_token(self) -> int:
        return int(C.llama_vocab_bos(self.vocab))

    @property
    def eos_token(self) -> int:
        return int(C.llama_vocab_eos(self.vocab))

    @property
    def add_bos(self) -> bool:
        return bool(C.llama_vocab_get_add_bos(self.vocab))

    # -- metadata ----------------------------------------------------------------------

    def chat_template(self) -> str | None:
        raw = C.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(1024)
        for i in range(C.llama_model_meta_count(self._model)):
            if C.llama_model_meta_key_by_index(self._model, i, buf, 1024) < 0:
                continue
            key = buf.value.decode("utf-8", errors="replace")
            n = C.llama_model_meta_val_str_by_index(self._model, i, buf, 1024)
            if n >= 0:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    # -- KV cache ----------------------------------------------------------------------

    def clear_slot(self, slot: int) -> None:
        C.llama_memory_seq_rm(self.memory, slot, -1, -1)

    @property
    def can_trim(self) -> bool:
        """Whether a slot's cache can be cut to a prefix: not for recurrent state (Mamba,
        hybrids), which holds no per-position entries."""
        return not (C.llama_model_is_recurrent(self._model) or C.llama_model_is_hybrid(self._model))

    def trim_slot(self, slot: int, keep: int) -> bool:
        """Keep positions 0..keep-1 of a slot's cache; False if they are not all there."""
        if not C.llama_memory_seq_rm(self.memory, slot, keep, -1):
            return False
        # A sliding-window cache may have dropped early positions: then keep is no prefix.
        return keep == 0 or (
            C.llama_memory_seq_pos_min(self.memory, slot) == 0
            and C.llama_memory_seq_pos_max(self.memory, slot) == keep - 1
        )

    def save_slot(self, slot: int) -> bytes:
        """A copy of one sequence's KV cache, to swap it out of its slot."""
        buf, written = self._read_slot(slot)
        return ctypes.string_at(buf, written)  # a slice of a c_uint8 array would be a list

    def _read_slot(self, slot: int) -> tuple[ctypes.Array[ctypes.c_uint8], int]:
        size = C.llama_state_seq_get_size(self.ctx, slot)
        buf = (ctypes.c_uint8 * size)()
        return buf, C.llama_state_seq_get_data(self.ctx, buf, size, slot)

    def copy_slots(self, pairs: tuple[tuple[int, int], ...]) -> int | None:
        """Copy whole KV caches (from, to), all read before any is written (so two pairs swap
        two slots). The first slot not written, or None."""
        states = [
            self._read_slot(source)
            if C.llama_memory_seq_pos_max(self.memory, source) >= 0
            else None
            for source, _ in pairs
        ]
        for (_, target), state in zip(pairs, states, strict=True):
            if state is None:  # restoring no cells would leave the target's in place
                self.clear_slot(target)
            elif not C.llama_state_seq_set_data(self.ctx, state[0], state[1], target):
                return target
        return None

    def restore_slot(self, slot: int, state: bytes) -> bool:
        """Put a saved KV cache back, into any free slot."""
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        return bool(C.llama_state_seq_set_data(self.ctx, buf, len(state), slot))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            C.llama_free(self.ctx)
            C.llama_model_free(self._model)
