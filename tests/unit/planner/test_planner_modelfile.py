from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovllm.planner.catalog import get_model
from sovllm.planner.errors import PlannerError
from sovllm.planner.memory import kv_bytes_per_token

from .gguf_files import write_gguf

SMOL_CONFIG = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


def test_hf_config_is_read_as_a_model(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMOL_CONFIG))
    m = get_model(str(path))
    catalog = get_model("smollm2-135m")
    assert (m.layers, m.kv_heads, m.head_dim) == (30, 3, 64)
    assert kv_bytes_per_token(m, 2) == kv_bytes_per_token(catalog, 2)
    assert m.params == pytest.approx(catalog.params, rel=0.02)


def test_model_folder_is_read_through_its_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMOL_CONFIG))
    assert get_model(str(tmp_path)).hidden == 576


def test_gguf_header_is_read_as_a_model(tmp_path: Path) -> None:
    meta: dict[str, int | str] = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.feed_forward_length": 128,
        "llama.vocab_size": 100,
    }
    tensors = {"token_embd.weight": [64, 100], "blk.0.attn_q.weight": [64, 64]}
    path = write_gguf(tmp_path / "tiny.gguf", meta, tensors)
    m = get_model(str(path))
    assert (m.name, m.layers, m.heads, m.kv_heads, m.head_dim) == ("tiny", 2, 4, 2, 16)
    assert m.params == 64 * 100 + 64 * 64
    assert m.tied  # no output.weight tensor
    assert m.file_bytes == path.stat().st_size


def test_bad_model_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE")
    with pytest.raises(PlannerError, match="not a GGUF"):
        get_model(str(bad))
    broken = tmp_path / "config.json"
    broken.write_text("{}")
    with pytest.raises(PlannerError, match="cannot read model config"):
        get_model(str(broken))
    with pytest.raises(PlannerError, match="does not exist"):
        get_model(str(tmp_path / "missing.json"))
