"""Write minimal GGUF headers for the model-file tests."""

from __future__ import annotations

import struct
from pathlib import Path


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path: Path, meta: dict[str, int | str], tensors: dict[str, list[int]]) -> Path:
    """A minimal GGUF v3 header (no tensor data) with the given metadata and tensor shapes."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, value in meta.items():
        out += _gguf_str(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _gguf_str(value)
        else:
            out += struct.pack("<I", 4) + struct.pack("<I", value)
    for name, dims in tensors.items():
        out += _gguf_str(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 2, 0)
    path.write_bytes(out)
    return path
