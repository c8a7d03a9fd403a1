"""Read a model's architecture from an HF config.json (or its folder) or a GGUF file header."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import IO, Any

from sovllm.planner.catalog import Model
from sovllm.planner.errors import PlannerError

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
        path = path / "config.json"
    if not path.exists():
        raise PlannerError(f"model file '{name}' does not exist")
    if path.suffix == ".gguf":
        return read_gguf(path)
    return read_hf_config(path)


def _estimate_params(cfg: dict[str, Any], experts: int) -> float:
    h = int(cfg["hidden_size"])
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads", heads))
    hd = int(cfg.get("head_dim") or h // heads)
    ffn = int(cfg["intermediate_size"])
    vocab = int(cfg["vocab_size"])
    attn = h * heads * hd * 2 + h * kv * hd * 2
    mlp = 3 * h * ffn * experts
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return float(layers * (attn + mlp) + embed)


def read_hf_config(path: Path) -> Model:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
        return Model(
            name=str(cfg.get("_name_or_path") or path.parent.name or path.stem),
            params=_estimate_params(cfg, experts),
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            ffn=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            experts=experts,
            active_experts=int(cfg.get("num_experts_per_tok") or 1),
            source=str(path),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlannerError(f"cannot read model config {path}: {exc}") from None


def _read(fh: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise PlannerError("GGUF file is truncated")
    return struct.unpack(fmt, data)[0]


def _read_str(fh: IO[bytes]) -> str:
    n = _read(fh, "<Q")
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
            # Only the length of big arrays (token lists, scores) matters here.
            fh.seek(n * size, 1)
            return n
        for _ in range(n):
            _read_value(fh, itype)
        return n
    raise PlannerError(f"GGUF value type {vtype} is unknown")


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
        hidden = int(get("embedding_length"))
        heads = int(get("attention.head_count"))
        kv = int(get("attention.head_count_kv", heads))
        vocab = int(get("vocab_size") or meta.get("tokenizer.ggml.tokens") or 0)
        return Model(
            name=str(meta.get("general.name") or path.stem),
            params=float(params),
            layers=int(get("block_count")),
            hidden=hidden,
            heads=heads,
            kv_heads=kv,
            head_dim=int(get("attention.key_length") or hidden // heads),
            ffn=int(get("feed_forward_length")),
            vocab=vocab,
            # A GGUF without a separate output.weight tensor ties it to the embedding.
            tied="output.weight" not in names,
            experts=int(get("expert_count") or 1),
            active_experts=int(get("expert_used_count") or 1),
            source=str(path),
            file_bytes=float(path.stat().st_size),
        )
    except (TypeError, ValueError) as exc:
        raise PlannerError(f"{path}: GGUF metadata lacks an architecture field ({exc})") from None
