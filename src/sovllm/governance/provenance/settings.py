"""The `models` settings: whether the model allow-list is enforced (docs/oversight.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_list: Literal["enforce", "warn", "off"] = Field(
        "off",
        description="enforce: `serve` refuses to load weights, or route to a replica, that "
        "`sovllm models approve` did not approve; warn: it serves them and records a "
        "`model.warn` audit entry; off: no check (serve warns once at start).",
    )
