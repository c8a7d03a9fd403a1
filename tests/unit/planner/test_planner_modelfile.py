from __future__ import annotations

import json
import struct
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


TINY_GGUF: dict[str, int | str] = {
    "general.architecture": "llama",
    "general.name": "tiny",
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
    "llama.feed_forward_length": 128,
    "llama.vocab_size": 100,
}


def test_gguf_header_is_read_as_a_model(tmp_path: Path) -> None:
    meta = {**TINY_GGUF, "llama.attention.head_count_kv": 2}
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


def _config(tmp_path: Path, cfg: dict[str, object]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize(
    "change",
    [
        {"num_attention_heads": 0},
        {"hidden_size": -576},
        {"num_hidden_layers": 0},
        {"num_key_value_heads": 0},
        {"vocab_size": 0},
    ],
)
def test_impossible_config_sizes_are_clear_errors(tmp_path: Path, change: dict[str, int]) -> None:
    with pytest.raises(PlannerError, match="cannot read model config"):
        get_model(_config(tmp_path, SMOL_CONFIG | change))


def test_config_nulls_fall_back_to_the_defaults(tmp_path: Path) -> None:
    m = get_model(_config(tmp_path, SMOL_CONFIG | {"num_key_value_heads": None, "head_dim": None}))
    assert (m.kv_heads, m.head_dim) == (9, 64)


def test_multimodal_config_reads_its_text_config(tmp_path: Path) -> None:
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "text_config": SMOL_CONFIG}
    m = get_model(_config(tmp_path, cfg))
    assert (m.layers, m.hidden, m.kv_heads) == (30, 576, 3)


def test_missing_config_field_is_named(tmp_path: Path) -> None:
    cfg = {k: v for k, v in SMOL_CONFIG.items() if k != "num_attention_heads"}
    with pytest.raises(PlannerError, match="lacks 'num_attention_heads'"):
        get_model(_config(tmp_path, cfg))


def test_folder_without_config_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match=r"no config\.json"):
        get_model(str(tmp_path))


def test_moe_config_counts_the_expert_intermediate_size(tmp_path: Path) -> None:
    # Qwen1.5-MoE-A2.7B: 60 experts of 1408 plus a 5632 shared expert; 14.3B parameters.
    cfg = {
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "intermediate_size": 5632,
        "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632,
        "num_experts": 60,
        "num_experts_per_tok": 4,
        "vocab_size": 151936,
    }
    m = get_model(_config(tmp_path, cfg))
    assert m.params == pytest.approx(14.3e9, rel=0.03)
    assert m.ffn == 1408 and m.experts == 60


def test_latent_attention_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match="latent attention"):
        get_model(_config(tmp_path, SMOL_CONFIG | {"kv_lora_rank": 512}))


def test_gguf_with_zero_heads_is_a_clear_error(tmp_path: Path) -> None:
    meta: dict[str, int | str] = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 0,
        "llama.feed_forward_length": 128,
        "llama.vocab_size": 100,
    }
    path = write_gguf(tmp_path / "zero.gguf", meta, {"token_embd.weight": [64, 100]})
    with pytest.raises(PlannerError, match="head"):
        get_model(str(path))


def test_gguf_with_a_corrupt_string_length_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "huge.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 2**62) + b"abc")
    with pytest.raises(PlannerError, match="truncated"):
        get_model(str(path))


def test_gguf_with_a_corrupt_array_length_is_a_clear_error(tmp_path: Path) -> None:
    key = b"tokenizer.ggml.scores"
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    # An array (type 9) of float32 (type 6) claiming 2**62 elements.
    path = tmp_path / "huge-array.gguf"
    path.write_bytes(head + struct.pack("<IIQ", 9, 6, 2**62) + b"\0" * 16)
    with pytest.raises(PlannerError, match="truncated"):
        get_model(str(path))


def test_zero_counts_mean_not_stated(tmp_path: Path) -> None:
    # Dense configs of MoE-capable architectures write expert counts as 0.
    cfg = {**SMOL_CONFIG, "num_local_experts": 0, "num_experts_per_tok": 0}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg, "max_position_embeddings": 0}))
    m = get_model(str(path))
    assert (m.experts, m.active_experts, m.max_context) == (1, 1, None)


def _tiny_gguf(path: Path, **extra: int) -> Path:
    return write_gguf(path, {**TINY_GGUF, **extra}, {"token_embd.weight": [64, 100]})


@pytest.mark.parametrize(
    ("file_type", "precision"), [(1, "fp16"), (32, "bf16"), (7, "int8"), (3, "int4"), (15, "int4")]
)
def test_gguf_file_type_gives_its_precision(tmp_path: Path, file_type: int, precision: str) -> None:
    path = _tiny_gguf(tmp_path / "t.gguf", **{"general.file_type": file_type})
    assert get_model(str(path)).file_precision == precision


def test_context_length_is_read_from_config_and_gguf(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SMOL_CONFIG, "max_position_embeddings": 8192}))
    assert get_model(str(path)).max_context == 8192
    gguf = _tiny_gguf(tmp_path / "t.gguf", **{"llama.context_length": 4096})
    assert get_model(str(gguf)).max_context == 4096
    assert get_model(str(_tiny_gguf(tmp_path / "u.gguf"))).max_context is None
    assert get_model("llama-2-70b").max_context == 4096
