"""Which llama.cpp build this process loads, and which CPU back-end variant it runs.

`make install` builds llama.cpp with its CPU back-end in variants chosen at run time, none of
them with AMX (`scripts/llamacpp/build.sh`), and links the build at
`<venv>/lib/sovllm-llama.cpp`. llama-cpp-python loads libllama from `LLAMA_CPP_LIB_PATH` when
that is set at its first import, so this package's `__init__` calls
`prefer_installed_build()` before any of its modules imports `llama_cpp`. Where the build is
missing (another platform, a plain `pip install`), llama-cpp-python's own portable build runs.
A `LLAMA_CPP_LIB_PATH` the operator set is theirs and is kept: pointing it at
`.../site-packages/llama_cpp/lib` is how to run the portable build on purpose.

ggml's own loader (`ggml_backend_load_all`) looks for back-ends in the compiled-in folder,
then next to the executable and in the current directory, and opens every `libggml-cpu-*.so`
it finds there to ask its score: started from a folder someone else can write to, that runs
their code. `load_cpu_backend`, which the engine calls before llama.cpp's own initialisation,
loads from the build's own folder only; code that makes a `llama_cpp.Llama` first (some
benchmarks and one test) still gets ggml's default search.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

LIB_PATH_ENV = "LLAMA_CPP_LIB_PATH"
BUILD_LINK = "sovllm-llama.cpp"
_VARIANT_PREFIX = "libggml-cpu-"


def installed_build(prefix: str = sys.prefix) -> Path | None:
    """The folder `make install` linked the variants build to, if it is there."""
    folder = Path(prefix) / "lib" / BUILD_LINK
    return folder if (folder / "libllama.so").is_file() else None


def prefer_installed_build(prefix: str = sys.prefix) -> None:
    """Point llama-cpp-python at the installed build, unless the operator chose one or
    `llama_cpp` is already imported (then it is too late, and `cpu_backend()` says which)."""
    if LIB_PATH_ENV in os.environ or "llama_cpp" in sys.modules:
        return
    folder = installed_build(prefix)
    if folder is not None:
        os.environ[LIB_PATH_ENV] = str(folder)


class BackendLoadError(Exception):
    pass


def load_cpu_backend(libllama: str) -> None:
    """Before `llama_backend_init`: where libllama's folder holds CPU variants, let ggml choose
    among them there and nowhere else. A build without variants registers its CPU back-end
    itself, and this does nothing."""
    folder = Path(libllama).parent
    if not any(folder.glob(f"{_VARIANT_PREFIX}*.so")):
        return
    ggml = ctypes.CDLL(str(folder / "libggml.so"))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_load_all_from_path(str(folder).encode())
    if ggml.ggml_backend_reg_count() == 0:
        raise BackendLoadError(f"no CPU back-end in {folder} loads on this machine")


@dataclass(frozen=True)
class CpuBackend:
    """The CPU back-end library this process mapped, and its variant ("zen4", "haswell"…), or
    "built-in" for a build with one CPU back-end (llama-cpp-python's wheel)."""

    library: str
    variant: str


def cpu_backend(maps: Path = Path("/proc/self/maps")) -> CpuBackend | None:
    """Read from the process's own mappings, so it names what runs, not what was meant to:
    None before the back-end is loaded, or where /proc is not there."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6:  # an anonymous mapping
            continue
        path = fields[5]
        name = Path(path).name
        if name.startswith(_VARIANT_PREFIX) and name.endswith(".so"):
            return CpuBackend(path, name[len(_VARIANT_PREFIX) : -len(".so")])
        if name.startswith("libggml-cpu.so"):
            return CpuBackend(path, "built-in")
    return None
