"""Hardware, model and engine catalogs, read from the YAML files beside this module, and the
look-ups that also accept a model file or the measured `cpu-local` profile."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from typing import Any

import yaml

from sovllm.planner.errors import PlannerError
from sovllm.planner.modelfile import looks_like_path, read_model_file
from sovllm.planner.profile import load_cpu_hardware
from sovllm.planner.specs import PRECISIONS, Engine, Hardware, KernelFactors, Model


def _load(name: str) -> list[dict[str, Any]]:
    text = resources.files("sovllm.planner").joinpath("data", name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, list):
        raise PlannerError(f"catalog {name} is not a list")
    return data


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@cache
def hardware_catalog() -> dict[str, Hardware]:
    out: dict[str, Hardware] = {}
    for row in _load("hardware.yaml"):
        row = dict(row)
        row["aliases"] = tuple(_norm(str(a)) for a in row.get("aliases") or ())
        hw = Hardware(**row)
        out[hw.name] = hw
    return out


@cache
def model_catalog() -> dict[str, Model]:
    out: dict[str, Model] = {}
    for row in _load("models.yaml"):
        row = dict(row)
        row["aliases"] = tuple(_norm(str(a)) for a in row.get("aliases") or ())
        row["params"] = float(row["params"])
        model = Model(**row)
        out[model.name] = model
    return out


@cache
def engine_catalog() -> dict[str, Engine]:
    out: dict[str, Engine] = {}
    for row in _load("engines.yaml"):
        row = dict(row)
        row["by_precision"] = _kernel_factors(row["name"], row.get("by_precision") or {})
        engine = Engine(**row)
        out[engine.name] = engine
    return out


def _kernel_factors(engine: str, rows: dict[str, Any]) -> dict[str, KernelFactors]:
    out: dict[str, KernelFactors] = {}
    for precision, factors in rows.items():
        if precision not in PRECISIONS:
            known = ", ".join(PRECISIONS)
            raise PlannerError(f"engine {engine}: by_precision names {precision!r}; known: {known}")
        try:
            out[precision] = KernelFactors(mfu=float(factors["mfu"]), mbu=float(factors["mbu"]))
        except (KeyError, TypeError, ValueError):
            raise PlannerError(
                f"engine {engine}: by_precision {precision} needs numbers mfu and mbu, "
                f"got {factors!r}"
            ) from None
    return out


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    found = difflib.get_close_matches(_norm(name), names, n=n, cutoff=0.4)
    return found or sorted(names)[:n]


def _lookup(kind: str, name: str, entries: dict[str, Any]) -> Any:
    key = _norm(name)
    if key in entries:
        return entries[key]
    for entry in entries.values():
        if key in getattr(entry, "aliases", ()):
            return entry
    near = ", ".join(closest(key, list(entries)))
    raise PlannerError(f"unknown {kind} '{name}'; closest: {near} (all: {', '.join(entries)})")


def get_hardware(name: str) -> Hardware:
    if _norm(name) == "cpu-local":
        return load_cpu_hardware()
    result: Hardware = _lookup("GPU", name, hardware_catalog())
    return result


def get_model(name: str) -> Model:
    """A catalog name, or the path of an HF config.json / model folder / GGUF file."""
    if looks_like_path(name):
        return read_model_file(name)
    result: Model = _lookup("model", name, model_catalog())
    return result


def get_engine(name: str) -> Engine:
    result: Engine = _lookup("engine", name, engine_catalog())
    return result
