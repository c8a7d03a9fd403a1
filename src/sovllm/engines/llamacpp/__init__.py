"""The embedded engine: llama.cpp in-process, laid out as nano-vllm is.

| file | nano-vllm | one noun |
|---|---|---|
| `settings.py` | `config.py` | `EngineSettings` |
| `sequence.py` | `engine/sequence.py` | one request's tokens and state |
| `fair_queue.py` | (the waiting deque) | waiting sequences, weighted fair queueing across tenants |
| `slots.py` | `engine/block_manager.py` | free slots, what their KV caches hold, prefix reuse |
| `scheduler.py` | `engine/scheduler.py` | which tokens go into the next step |
| `runner.py` | `engine/model_runner.py` | one `llama_decode` per step, sampling |
| `model.py` | `models/` | the only file that knows llama.cpp's structs |
| `engine.py` | `engine/llm_engine.py` | the thread that drives them, the bridge to asyncio |
| `tokenizer.py` | (the HF tokenizer) | a request's prompt ids; the vocabulary without weights |
| `chat_template.py`, `text.py` | | the GGUF's chat template; UTF-8 and stop strings |
| `calibrate.py` | | this machine's prefill and decode rates, for the planner |
| `native.py` | | which llama.cpp build loads, and the CPU variant it runs |

Importing this package loads nothing: `settings.py` is read by `sovllm.config` without
llama.cpp, and the engine imports neither `sovllm.config` nor the pool. It only points
llama-cpp-python at the build `make install` made for this CPU (`native.py`), which has to
happen before any module imports `llama_cpp`.
"""

from sovllm.engines.llamacpp.native import prefer_installed_build

prefer_installed_build()
