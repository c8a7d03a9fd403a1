"""engine.gpu_layers: llama.cpp offloads layers to a GPU, or the start fails saying why.

`make install`'s llama.cpp is CPU-only, so here a request to offload must stop the model's load
with an error that names the setting and the way out, never run on the CPU as if it had worked.
(With a GPU build, as on the GPU host of benchmarks/llamacpp_gpu/device.sh, the same load
offloads every layer.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import llama_cpp as C
import pytest
from pydantic import ValidationError

from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel, ModelLoadError
from sovllm.engines.llamacpp.settings import EngineSettings
from tests.conftest import MODEL_ID, free_port


@pytest.mark.parametrize("layers", [-1, 1])
def test_offloading_needs_a_gpu_build(layers: int) -> None:
    shape = ContextShape(
        slots=1, context_per_slot=256, batch_tokens=64, threads=1, gpu_layers=layers
    )
    path = resolve_model(MODEL_ID).path
    if C.llama_supports_gpu_offload():
        LlamaModel(path, shape).close()
        return
    with pytest.raises(ModelLoadError) as raised:
        LlamaModel(path, shape)
    message = str(raised.value)
    assert f"engine.gpu_layers is {layers}" in message, message
    assert "LLAMA_CPP_LIB_PATH" in message and "set 0" in message, message


def test_no_offload_loads_on_the_cpu() -> None:
    shape = ContextShape(slots=1, context_per_slot=256, batch_tokens=64, threads=1, gpu_layers=0)
    LlamaModel(resolve_model(MODEL_ID).path, shape).close()


def test_the_setting_is_bounded() -> None:
    assert EngineSettings().gpu_layers == 0
    with pytest.raises(ValidationError, match="greater than or equal to -1"):
        EngineSettings(gpu_layers=-2)


def test_serve_refuses_to_offload_without_a_gpu_in_one_line(tmp_path: Path) -> None:
    if C.llama_supports_gpu_offload():
        pytest.fail("this test needs make install's CPU-only llama.cpp (LLAMA_CPP_LIB_PATH)")
    env = {**os.environ, "SOVLLM_DATA_DIR": str(tmp_path), "SOVLLM_ENGINE__GPU_LAYERS": "-1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "engine.gpu_layers is -1" in out and "LLAMA_CPP_LIB_PATH" in out, out
    assert "Traceback" not in out, out
    # Refused before the database or any key was made.
    assert not (tmp_path / "bootstrap-admin.key").exists()
