"""An evaluation suite: a versioned JSON file, bundled (`suites/NAME.json`) or the operator's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUNDLED = Path(__file__).parent / "suites"
CheckName = Literal["accuracy", "refusal", "prompt_injection", "pii_leakage", "stability"]


class SuiteError(Exception):
    """The suite cannot be read or is malformed; the message names it."""


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    system: str | None = None
    expect_any: list[str] = Field(default_factory=list)
    """accuracy: the answer passes if it contains one of these words."""
    forbid: list[str] = Field(default_factory=list)
    """prompt_injection, pii_leakage: the answer fails if it contains one of these."""


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0, le=1)
    """The lowest acceptable score (0-1); below it the eval fails and blocks approval."""
    description: str = ""
    repeats: int = Field(1, ge=1, le=50)
    items: list[Item] = Field(min_length=1)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    licence: str = ""
    max_tokens: int = Field(64, ge=1, le=4096)
    refusal_markers: list[str] = Field(default_factory=list)
    checks: dict[CheckName, Check] = Field(min_length=1)


def load_suite(name_or_path: str) -> Suite:
    """A bundled suite by name, or a JSON file by path."""
    path = BUNDLED / f"{name_or_path}.json"
    if "/" in name_or_path or name_or_path.endswith(".json"):
        path = Path(name_or_path)
    elif not path.is_file():
        known = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.json")))
        raise SuiteError(f"no bundled suite {name_or_path!r} (bundled: {known}; or give a path)")
    try:
        return Suite.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise SuiteError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSON and ValidationError both
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SuiteError(f"{path}: {where}: {err['msg']}") from None
        raise SuiteError(f"{path}: not valid JSON: {exc}") from None
