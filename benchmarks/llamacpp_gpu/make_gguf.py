"""Write a Llama-architecture GGUF with random F16 weights of a given shape.

A GPU's speed does not depend on the weights' values, so a random model of Llama-3.1-8B's exact
shape times like the real one, and needs no download: the GPU host it runs on has no network.
Values come from one random pool that every tensor views (the file is written from views, so
peak memory is the largest tensor, not the model). The vocabulary is a SentencePiece-style list
of placeholder tokens: llama-bench feeds random token ids and never tokenises text. With
`--vocab-from` (a JSON of `dump_vocab.py`) the model gets that tokenizer instead, padded with
tokens no text produces (`[unused…]`) up to `--vocab`: one file of Llama-3.1-8B's exact shape
serves llama-bench and also `sovllm serve` and `sovllm bench`, which send text.

Needs numpy, PyYAML (gguf-py imports it) and llama.cpp's gguf-py (`--gguf-py`), and no sovllm
import: the GPU host has neither pydantic nor sovllm installed.

    python make_gguf.py --gguf-py llama.cpp/gguf-py --out /dev/shm/llama8b-f16.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf-py", required=True, help="path of llama.cpp's gguf-py folder")
    # Defaults: Llama-3.1-8B's config.json.
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--vocab-from", help="a tokenizer JSON of dump_vocab.py, padded to --vocab")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf

    vocab_keys: list[dict[str, Any]] = []
    if args.vocab_from:
        with open(args.vocab_from) as f:
            vocab_keys = json.load(f)["keys"]
        pad_vocab(vocab_keys, args.vocab, ap)

    head_dim = args.hidden // args.heads
    if args.vocab < 259:
        ap.error("--vocab must be at least 259 (3 special + 256 byte tokens)")

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("random-llama")
    w.add_block_count(args.layers)
    w.add_context_length(args.ctx)
    w.add_embedding_length(args.hidden)
    w.add_feed_forward_length(args.ffn)
    w.add_head_count(args.heads)
    w.add_head_count_kv(args.kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    if vocab_keys:
        for k in vocab_keys:
            sub = gguf.GGUFValueType[k["sub_type"]] if k["sub_type"] else None
            w.add_key_value(k["key"], k["value"], gguf.GGUFValueType[k["type"]], sub)
    else:
        placeholder_vocab(w, gguf, args.vocab)

    q_out = args.heads * head_dim
    kv_out = args.kv_heads * head_dim
    largest = max(args.vocab * args.hidden, args.ffn * args.hidden, q_out * args.hidden)
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(largest, dtype=np.float32) * 0.02).astype(np.float16)
    norm = np.ones(args.hidden, dtype=np.float32)

    def mat(rows: int, cols: int) -> np.ndarray:
        return pool[: rows * cols].reshape(rows, cols)

    w.add_tensor("token_embd.weight", mat(args.vocab, args.hidden))
    w.add_tensor("output_norm.weight", norm)
    w.add_tensor("output.weight", mat(args.vocab, args.hidden))
    for i in range(args.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm)
        w.add_tensor(p + "attn_q.weight", mat(q_out, args.hidden))
        w.add_tensor(p + "attn_k.weight", mat(kv_out, args.hidden))
        w.add_tensor(p + "attn_v.weight", mat(kv_out, args.hidden))
        w.add_tensor(p + "attn_output.weight", mat(args.hidden, q_out))
        w.add_tensor(p + "ffn_norm.weight", norm)
        w.add_tensor(p + "ffn_gate.weight", mat(args.ffn, args.hidden))
        w.add_tensor(p + "ffn_up.weight", mat(args.ffn, args.hidden))
        w.add_tensor(p + "ffn_down.weight", mat(args.hidden, args.ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def pad_vocab(keys: list[dict[str, Any]], vocab: int, ap: argparse.ArgumentParser) -> None:
    """Extend the token list (and its types, and scores where there are some) to `vocab`
    entries with normal tokens that no merge builds, so no prompt ever contains one."""
    by_key = {k["key"]: k for k in keys}
    tokens = by_key["tokenizer.ggml.tokens"]["value"]
    if len(tokens) > vocab:
        ap.error(f"--vocab {vocab} is smaller than the tokenizer's {len(tokens)} tokens")
    extra = vocab - len(tokens)
    tokens += [f"[unused{i}]" for i in range(len(tokens), vocab)]
    if "tokenizer.ggml.token_type" in by_key:
        by_key["tokenizer.ggml.token_type"]["value"] += [1] * extra  # NORMAL
    if "tokenizer.ggml.scores" in by_key:
        by_key["tokenizer.ggml.scores"]["value"] += [0.0] * extra


def placeholder_vocab(w: Any, gguf: Any, vocab: int) -> None:
    """SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens llama.cpp looks up at load
    time, then placeholders up to the vocabulary size."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(len(tokens), vocab)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


if __name__ == "__main__":
    main()
