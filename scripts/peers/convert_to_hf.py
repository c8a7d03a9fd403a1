"""The default model's GGUF as an HF safetensors folder, for vLLM (which serves no GGUF on CPU).

Runs in the vLLM venv (transformers, gguf, torch). transformers dequantizes the GGUF but will
not save a model it loaded from one, so the weights move into a fresh model built from the
same config, saved in bf16 with the tokenizer. SHA256SUMS lists every file written, and
SOURCE.sha256 the GGUF it came from.

Usage: python convert_to_hf.py MODEL.gguf OUT_DIR
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: convert_to_hf.py MODEL.gguf OUT_DIR")
    gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
    if not gguf.is_file():
        sys.exit(f"convert_to_hf: {gguf} is not a file")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings show as a missing lm_head; anything else is a failed conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        sys.exit(f"convert_to_hf: weights do not fit: missing {missing}, unexpected {unexpected}")
    fresh = fresh.to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "SOURCE.sha256").write_text(f"{sha256(gguf)}  {gguf.name}\n")
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name != "SHA256SUMS")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.name}\n" for p in files))
    print(f"converted {gguf.name} to {out} in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
