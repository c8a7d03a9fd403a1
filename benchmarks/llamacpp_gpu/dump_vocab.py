"""Copy a GGUF's tokenizer (every `tokenizer.*` key, the chat template included) to a JSON file.

`make_gguf.py --vocab-from` writes it into a random-weight model, so that `sovllm serve` on the
GPU host runs a model of Llama-3.1-8B's shape that tokenizes and renders chats exactly as the
default SmolLM2 model does: `sovllm bench`'s prompt words are then one token each, and its
prompt lengths exact. The tokenizer is about 1 MB as JSON; the 92 MB model it comes from is too
large to travel to the GPU host.

    python dump_vocab.py --gguf-py llama.cpp/gguf-py MODEL.gguf OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--gguf-py", required=True, help="path of llama.cpp's gguf-py folder")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf

    reader = gguf.GGUFReader(args.model)
    keys: list[dict[str, Any]] = []
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        keys.append(
            {"key": name, "type": vtype.name, "sub_type": sub.name if sub else None, "value": value}
        )
    if not any(k["key"] == "tokenizer.ggml.tokens" for k in keys):
        sys.exit(f"{args.model} has no tokenizer.ggml.tokens")
    with open(args.out, "w") as f:
        json.dump({"source": args.model, "keys": keys}, f)


if __name__ == "__main__":
    main()
