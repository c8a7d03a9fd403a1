"""A model file llama.cpp cannot load (a GGUF header alone, a real model cut short) stops
`sovllm serve` with one line naming the file, never uvicorn's traceback of the lifespan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sovllm.engines.catalog import resolve_model
from tests.conftest import MODEL_ID, free_port


def _header_only(path: Path) -> None:
    path.write_bytes(b"GGUF\x03\x00\x00\x00")


def _cut_short(path: Path) -> None:
    with resolve_model(MODEL_ID).path.open("rb") as fh:
        path.write_bytes(fh.read(3_000_000))  # the metadata and the first tensors only


@pytest.mark.parametrize("make", [_header_only, _cut_short])
def test_a_model_file_llama_cpp_cannot_load_is_one_line(tmp_path: Path, make: object) -> None:
    model = tmp_path / "broken.gguf"
    make(model)  # type: ignore[operator]
    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", str(free_port()), "--model", str(model)],
        env={**os.environ, "SOVLLM_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"sovllm: llama.cpp could not load the model file {model}" in output, output
    assert "Traceback" not in output, output
