"""Weights derived from a shipped GGUF at first start: another number format, same weights.

The catalog's default model ships as Q4_1. Dequantized to F16 it is the same weights computed
with other arithmetic (F16 activations instead of 8-bit ones), which answers the bundled quality
questions at least as well and decodes faster in a batch on this CPU (docs/performance.md).
llama.cpp's own quantizer makes the file in about a second; it is written once into the model
folder, next to a provenance file that records both hashes, and reused while both still match:

    <stem>.<FORMAT>.gguf            the derived weights
    <stem>.<FORMAT>.gguf.json       {"derived_from": {path, sha256}, "sha256", "format", "by"}

Two processes starting at once (a gateway and its workers) take a file lock, so one derives and
the other reuses. A file that no longer matches its provenance is derived again, never served.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sovllm.engines.file_hash import weights_sha256

log = logging.getLogger(__name__)

# llama.cpp's file types for the formats sovllm derives (llama.h, enum llama_ftype).
FORMATS = {"F16": 1, "Q8_0": 7}


class DerivationError(Exception):
    """The derived file cannot be made; the message names the file and why."""


@dataclass(frozen=True)
class Derivation:
    """What a derived catalog entry is made from."""

    source: Path
    format: str


def provenance_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def derived_from(path: Path) -> tuple[Path, str] | None:
    """The file `path` was derived from and its SHA-256, from its provenance file, if any."""
    try:
        doc = json.loads(provenance_path(path).read_text())
        return Path(doc["derived_from"]["path"]), str(doc["derived_from"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def derive(d: Derivation, target: Path, cache_dir: Path | None = None) -> Path:
    """`target`, derived from `d.source` unless a matching one is there already."""
    if d.format not in FORMATS:
        raise DerivationError(f"cannot derive format {d.format!r} (known: {', '.join(FORMATS)})")
    try:
        for folder in reversed([target.parent, *target.parent.parents]):
            if not folder.exists():  # each one private, not only the last (Path.mkdir)
                folder.mkdir(mode=0o700, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent start waits here, then reuses
            source_sha = weights_sha256(d.source, cache_dir)
            if _matches(target, source_sha, d.format, cache_dir):
                return target
            _quantize(d, target)
            doc = {
                "derived_from": {"path": str(d.source), "sha256": source_sha},
                "format": d.format,
                "sha256": weights_sha256(target, cache_dir),
                "by": f"llama.cpp llama_model_quantize (llama-cpp-python {_version()})",
            }
            tmp = provenance_path(target).with_suffix(".partial")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            tmp.replace(provenance_path(target))
            return target
    except OSError as exc:
        raise DerivationError(
            f"cannot derive {target.name} in {target.parent}: {exc.strerror or exc}"
        ) from None


def _matches(target: Path, source_sha: str, fmt: str, cache_dir: Path | None) -> bool:
    if not target.is_file():
        return False
    try:
        doc = json.loads(provenance_path(target).read_text())
        ok = (
            doc["derived_from"]["sha256"] == source_sha
            and doc["format"] == fmt
            and doc["sha256"] == weights_sha256(target, cache_dir)
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("%s does not match its provenance; deriving it again", target)
    return bool(ok)


def _quantize(d: Derivation, target: Path) -> None:
    from sovllm.engines.llamacpp.model import convert  # only a first start needs llama.cpp

    partial = target.with_name(target.name + ".partial")
    started = time.perf_counter()
    if not convert(d.source, partial, FORMATS[d.format], os.cpu_count() or 1):
        partial.unlink(missing_ok=True)
        raise DerivationError(f"llama.cpp could not derive {target.name} from {d.source}")
    partial.replace(target)
    log.info(
        "derived %s (%s) from %s in %.1f s",
        target,
        d.format,
        d.source.name,
        time.perf_counter() - started,
    )


def _version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")
