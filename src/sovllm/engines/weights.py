"""The identity of a model's weights: the SHA-256 of a file (a GGUF), or of a folder (a Hugging
Face safetensors folder, as vLLM loads it).

A folder's SHA-256 is the SHA-256 of its manifest: one `<file sha256>  <relative path>\\n` line
per regular file under it (symbolic links followed, so a Hugging Face cache snapshot hashes its
blobs; names starting with "." skipped, e.g. the `.cache/` a download leaves), sorted by path
(UTF-8 byte order, POSIX separators). That manifest is exactly what `sha256sum` prints, so the
same digest comes from a shell (docs/oversight.md, "Models"):

    cd DIR && find -L . -type f -not -path '*/.*' -printf '%P\\n' | LC_ALL=C sort \\
      | xargs -d '\\n' sha256sum | sha256sum

Every file counts, not only the tensors: the config, tokenizer and chat template shape the
output too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sovllm.engines.catalog import weights_sha256


class WeightsError(Exception):
    """The weights cannot be read; the message names the path."""


@dataclass(frozen=True)
class Weights:
    path: Path
    kind: str
    """file or folder."""
    sha256: str
    files: dict[str, str] = field(default_factory=dict)
    """A folder's files: relative path -> SHA-256 (empty for a single file)."""


def manifest_text(files: dict[str, str]) -> str:
    """The `sha256sum` lines a folder's SHA-256 is taken over (see the module doc)."""
    names = sorted(files, key=lambda n: n.encode())
    return "".join(f"{files[n]}  {n}\n" for n in names)


def folder_files(path: Path) -> list[str]:
    """The files a folder's hash covers, as POSIX paths relative to it."""
    found = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            full = Path(root) / name
            if name.startswith(".") or not full.is_file():
                continue
            found.append(full.relative_to(path).as_posix())
    return found


def hash_weights(path: Path, cache_dir: Path | None = None) -> Weights:
    """Hash a weights file or folder (each file cached by size and mtime under `cache_dir`)."""
    path = path.expanduser()
    try:
        if path.is_file():
            return Weights(path.resolve(), "file", weights_sha256(path, cache_dir))
        if not path.is_dir():
            raise WeightsError(f"{path} is neither a weights file nor a folder")
        files = {n: weights_sha256(path / n, cache_dir) for n in folder_files(path)}
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not files:
        raise WeightsError(f"{path} holds no files to hash")
    digest = hashlib.sha256(manifest_text(files).encode()).hexdigest()
    return Weights(path.resolve(), "folder", digest, files)
