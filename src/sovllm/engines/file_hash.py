"""The SHA-256 of a weights file, hashed once per file version and cached by size and mtime."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def weights_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of the weights file, hashed once per file version and cached by size and mtime."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache = cache_dir / "weights-sha256.json" if cache_dir is not None else None
    known: dict[str, str] = {}
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    value = digest.hexdigest()
    if cache is not None:
        known[key] = value
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    return value
