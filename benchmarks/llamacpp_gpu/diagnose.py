"""Load a model through each layer of sovllm's llama.cpp path, each in a process of its own,
and say which one fails (with the Python stack faulthandler prints on a crash).

    LLAMA_CPP_LIB_PATH=build/bin [GPU_LAYERS=-1] python diagnose.py MODEL.gguf

What a segmentation fault in `sovllm serve` leaves is the server's exit status; this narrows it
to llama-cpp-python itself, the vocabulary-only load, or one of the engine's context shapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CHECKS = {
    "llama-cpp-python, every layer on the GPU": """
from llama_cpp import Llama
m = Llama(MODEL, n_gpu_layers=LAYERS, n_ctx=2048, flash_attn=True, verbose=False)
print(m.create_completion("The capital of France is", max_tokens=8)["usage"])
""",
    "sovllm tokenizer (vocab only)": """
from sovllm.engines.llamacpp.tokenizer import Tokenizer
print(len(Tokenizer(Path(MODEL)).tokenize("The capital of France is", add_special=True, parse_special=False)))
""",
    "sovllm model, 1 slot, flash attention off": """
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
LlamaModel(Path(MODEL), ContextShape(1, 2048, 512, 16, False, LAYERS)).close()
""",
    "sovllm model, 1 slot, flash attention on": """
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
LlamaModel(Path(MODEL), ContextShape(1, 2048, 512, 16, True, LAYERS)).close()
""",
    "sovllm model, 32 slots (the default), flash attention on": """
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
LlamaModel(Path(MODEL), ContextShape(32, 2048, 512, 16, True, LAYERS)).close()
""",
    # What `sovllm serve` does differently (session 12 saw it crash where the above passed):
    # it loads the model in a worker thread, after the gateway's vocabulary-only load, and
    # after its energy meter started NVML.
    "sovllm model in a worker thread": """
from concurrent.futures import ThreadPoolExecutor
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
shape = ContextShape(32, 2048, 512, 16, True, LAYERS)
ThreadPoolExecutor(1).submit(LlamaModel, Path(MODEL), shape).result().close()
""",
    "sovllm model after the vocabulary-only load": """
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
from sovllm.engines.llamacpp.tokenizer import Tokenizer
tok = Tokenizer(Path(MODEL))
LlamaModel(Path(MODEL), ContextShape(32, 2048, 512, 16, True, LAYERS)).close()
""",
    "sovllm model after nvmlInit": """
import pynvml
pynvml.nvmlInit()
from sovllm.engines.llamacpp.model import ContextShape, LlamaModel
LlamaModel(Path(MODEL), ContextShape(32, 2048, 512, 16, True, LAYERS)).close()
""",
    "the engine started as sovllm serve starts it (a worker thread)": """
from concurrent.futures import ThreadPoolExecutor
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.settings import EngineSettings
engine = LlamaCppEngine(resolve_model(MODEL), EngineSettings(gpu_layers=LAYERS))
ThreadPoolExecutor(1).submit(engine.start).result()
engine.shutdown()
""",
}


def main() -> None:
    model = sys.argv[1]
    layers = int(os.environ.get("GPU_LAYERS", "-1"))  # 0: a dry run on a CPU-only build
    for name, body in CHECKS.items():
        code = (
            "import faulthandler; faulthandler.enable()\nfrom pathlib import Path\n"
            f"MODEL = {model!r}\nLAYERS = {layers}\n{body}"
        )
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            print(f"TIMEOUT {name}", flush=True)
            continue
        took = time.monotonic() - start
        status = "ok" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
        print(f"{status} {name} ({took:.1f} s) {proc.stdout.strip()[-200:]}", flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], flush=True)


if __name__ == "__main__":
    main()
