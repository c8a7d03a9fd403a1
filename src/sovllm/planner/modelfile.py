"""Read a model's architecture from an HF config.json (or its folder) or a GGUF file header."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import IO, Any

from sovllm.planner.errors import PlannerError
from sovllm.planner.specs import Model

GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format (strings and arrays are handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def looks_like_path(name: str) -> bool:
    return name.endswith((".json", ".gguf")) or ("/" in name and Path(name).exists())


def read_model_file(name: str) -> Model:
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PlannerError(f"model folder '{name}' has no config.json")
        path = path / "config.json"
    if not path.exists():
        raise PlannerError(f"model file '{name}' does not exist")
    if path.suffix == ".gguf":
        return read_gguf(path)
    return read_hf_config(path)


def _positive(what: str, value: Any) -> int:
    if value is None:
        raise ValueError(f"it lacks '{what}'")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} must be a whole number, got {value}")
    n = int(value)
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return n


def _field(cfg: dict[str, Any], key: str) -> int:
    return _positive(key, cfg.get(key))


def _optional(cfg: dict[str, Any], key: str, default: int) -> int:
    """An optional field; absent or null (as some configs write it) means the default."""
    value = cfg.get(key)
    return default if value is None else _positive(key, value)


def _count(cfg: dict[str, Any], key: str, default: int) -> int:
    """A count where 0 means "none stated", as dense configs write expert counts."""
    value = cfg.get(key)
    return default if value in (None, 0) else _positive(key, value)


def _text_config(cfg: Any) -> dict[str, Any]:
    """The language model's part of a config: multimodal models (Llava, Gemma 3, Mistral 3,
    ...) nest it under `text_config`."""
    if not isinstance(cfg, dict):
        raise ValueError("it is not a JSON object")
    text = cfg.get("text_config")
    if "num_hidden_layers" not in cfg and isinstance(text, dict):
        return {**text, "_name_or_path": cfg.get("_name_or_path")}
    return cfg


def read_hf_config(path: Path) -> Model:
    try:
        cfg = _text_config(json.loads(path.read_text(encoding="utf-8")))
        if cfg.get("kv_lora_rank"):
            raise ValueError(
                "multi-head latent attention (kv_lora_rank, DeepSeek-V2/V3) is not modelled: "
                "its KV cache is not 2 x kv_heads x head_dim per layer"
            )
        hidden = _field(cfg, "hidden_size")
        layers = _field(cfg, "num_hidden_layers")
        heads = _field(cfg, "num_attention_heads")
        kv = _optional(cfg, "num_key_value_heads", heads)
        if hidden < heads:
            raise ValueError(f"hidden_size {hidden} is below num_attention_heads {heads}")
        head_dim = _optional(cfg, "head_dim", hidden // heads)
        vocab = _field(cfg, "vocab_size")
        experts = _count(cfg, "num_local_experts", _count(cfg, "num_experts", 1))
        # MoE configs that give the routed experts their own size (Qwen-MoE, Qwen3-MoE) keep
        # `intermediate_size` for a dense or shared MLP.
        ffn = _field(cfg, "intermediate_size")
        if experts > 1 and cfg.get("moe_intermediate_size") is not None:
            ffn = _field(cfg, "moe_intermediate_size")
        shared = 0
        if experts > 1 and cfg.get("shared_expert_intermediate_size"):
            shared = _field(cfg, "shared_expert_intermediate_size")
        tied = bool(cfg.get("tie_word_embeddings", False))
        attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
        mlp = 3 * hidden * (ffn * experts + shared)
        params = float(layers * (attn + mlp) + vocab * hidden * (1 if tied else 2))
        return Model(
            name=str(cfg.get("_name_or_path") or path.parent.name or path.stem),
            params=params,
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv,
            head_dim=head_dim,
            ffn=ffn,
            vocab=vocab,
            tied=tied,
            experts=experts,
            active_experts=_count(cfg, "num_experts_per_tok", 1),
            source=str(path),
            max_context=_count(cfg, "max_position_embeddings", 0) or None,
        )
    except (OSError, ValueError, TypeError) as exc:
        raise PlannerError(f"cannot read model config {path}: {exc}") from None


def _read(fh: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise PlannerError("GGUF file is truncated")
    return struct.unpack(fmt, data)[0]


def _read_str(fh: IO[bytes]) -> str:
    n = _read(fh, "<Q")
    # A corrupt length must not make us allocate it: no string is longer than what is left.
    if n > os.fstat(fh.fileno()).st_size - fh.tell():
        raise PlannerError("GGUF file is truncated")
    return fh.read(n).decode("utf-8", errors="replace")


def _read_value(fh: IO[bytes], vtype: int) -> Any:
    if vtype in _SCALARS:
        return _read(fh, _SCALARS[vtype])
    if vtype == _STRING:
        return _read_str(fh)
    if vtype == _ARRAY:
        itype = _read(fh, "<I")
        n = _read(fh, "<Q")
        if itype in _SCALARS:
            size = struct.calcsize(_SCALARS[itype])
            # Only the length of big arrays (token lists, scores) matters here; a corrupt length
            # must not seek past the end.
            if n * size > os.fstat(fh.fileno()).st_size - fh.tell():
                raise PlannerError("GGUF file is truncated")
            fh.seek(n * size, 1)
            return n
        for _ in range(n):
            _read_value(fh, itype)
        return n
    raise PlannerError(f"GGUF value type {vtype} is unknown")


# llama.cpp's general.file_type -> the planner's precision: 16-bit stays 16-bit, Q8_0 is int8,
# every smaller quantisation (Q2..Q6, IQ*, MXFP4) is dequantised into 16-bit GEMMs like int4.
_GGUF_16BIT = {1: "fp16", 32: "bf16"}
_GGUF_INT8 = 7


def _gguf_precision(file_type: Any) -> str | None:
    if not isinstance(file_type, int) or file_type == 0:
        return None  # unknown or F32: leave the flag's precision
    if file_type in _GGUF_16BIT:
        return _GGUF_16BIT[file_type]
    return "int8" if file_type == _GGUF_INT8 else "int4"


def read_gguf(path: Path) -> Model:
    try:
        with path.open("rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise PlannerError(f"{path} is not a GGUF file")
            _read(fh, "<I")  # version
            n_tensors = _read(fh, "<Q")
            n_kv = _read(fh, "<Q")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _read_str(fh)
                meta[key] = _read_value(fh, _read(fh, "<I"))
            params = 0
            names: set[str] = set()
            for _ in range(n_tensors):
                names.add(_read_str(fh))
                dims = [_read(fh, "<Q") for _ in range(_read(fh, "<I"))]
                _read(fh, "<I")
                _read(fh, "<Q")
                count = 1
                for d in dims:
                    count *= d
                params += count
    except OSError as exc:
        raise PlannerError(f"cannot read {path}: {exc.strerror or exc}") from None
    arch = str(meta.get("general.architecture", "llama"))

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    try:
        hidden = _positive("embedding_length", get("embedding_length"))
        heads = _positive("attention.head_count", get("attention.head_count"))
        kv = _positive("attention.head_count_kv", get("attention.head_count_kv", heads))
        vocab = _positive("vocab_size", get("vocab_size") or meta.get("tokenizer.ggml.tokens"))
        key_length = get("attention.key_length") or hidden // heads
        return Model(
            name=str(meta.get("general.name") or path.stem),
            params=float(params),
            layers=_positive("block_count", get("block_count")),
            hidden=hidden,
            heads=heads,
            kv_heads=kv,
            head_dim=_positive("attention.key_length", key_length),
            ffn=_positive("feed_forward_length", get("feed_forward_length")),
            vocab=vocab,
            # A GGUF without a separate output.weight tensor ties it to the embedding.
            tied="output.weight" not in names,
            experts=int(get("expert_count") or 1),
            active_experts=int(get("expert_used_count") or 1),
            source=str(path),
            file_bytes=float(path.stat().st_size),
            max_context=int(get("context_length") or 0) or None,
            file_precision=_gguf_precision(meta.get("general.file_type")),
        )
    except (TypeError, ValueError) as exc:
        raise PlannerError(
            f"{path}: GGUF metadata lacks a usable architecture field ({exc})"
        ) from None
