"""Issue #15 item 3: the engine runs the llama.cpp CPU variant this machine allows, never AMX.

`make install` builds llama.cpp's CPU back-end in variants ggml chooses between at run time
(scripts/llamacpp/build.sh), on x86-64 Linux. Checked here against the real build and a real
`sovllm serve`:
- no library of the build holds an AMX instruction (objdump, with a detector shown to find one),
  so nothing can execute one on a machine that advertises AMX and forbids it (DESIGN.md's
  sandboxes; ggml would choose an AMX variant there by CPUID alone);
- each library finds its dependencies next to itself only (RUNPATH exactly $ORIGIN, no empty
  entry that the loader reads as the current directory);
- the server maps the variant that needs the most of what /proc/cpuinfo says this CPU has
  (an AVX-512 one where the CPU has AVX-512), and answers a chat with it.
"""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from sovllm.engines.llamacpp.native import installed_build
from tests.conftest import MODEL_ID, Server

# What each variant requires, from ggml/src/CMakeLists.txt's x86 list and the compile flags
# ggml-cpu/CMakeLists.txt maps each name to, in /proc/cpuinfo's words. Written out here rather
# than read from ggml's scoring, so that the test is a second opinion on the choice.
_HASWELL = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
_AVX512 = _HASWELL | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
REQUIRES = {
    "x64": set(),
    "sse42": {"sse4_2"},
    "haswell": _HASWELL,
    "alderlake": _HASWELL | {"avx_vnni"},
    "skylakex": _AVX512,
    "cascadelake": _AVX512 | {"avx512_vnni"},
    "icelake": _AVX512 | {"avx512vbmi", "avx512_vnni"},
    "zen4": _AVX512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16"},
}
# Off x86-64 Linux the build script does nothing and the engine runs llama-cpp-python's own build.
pytestmark = pytest.mark.skipif(
    (platform.system(), platform.machine()) != ("Linux", "x86_64"),
    reason="the CPU variants build is made on x86-64 Linux only",
)
AMX = re.compile(
    r"\s(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease"
    r"|tdpb[su][su]d|tdpbf16ps|tdpfp16ps)\b"
)


def build() -> Path:
    folder = installed_build()
    assert folder is not None, "no llama.cpp variants build in .venv/lib: `make install` makes it"
    return folder.resolve()  # /proc/PID/maps names the file, not the link


def amx_instructions(library: Path) -> int:
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return len(AMX.findall(listing))


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("/proc/cpuinfo has no flags line")


def test_the_amx_detector_finds_an_amx_instruction(tmp_path: Path) -> None:
    # Without this, an objdump that printed nothing would pass the test below.
    source = tmp_path / "amx.s"
    source.write_text("ldtilecfg (%rax)\ntdpbssd %tmm2, %tmm1, %tmm0\ntilerelease\n")
    subprocess.run(["as", "-o", str(tmp_path / "amx.o"), str(source)], check=True)
    assert amx_instructions(tmp_path / "amx.o") == 3


def test_no_library_of_the_build_holds_an_amx_instruction() -> None:
    libraries = sorted(build().glob("lib*.so"))
    variants = {p.name[len("libggml-cpu-") : -len(".so")] for p in libraries if "-cpu-" in p.name}
    assert variants == set(REQUIRES), "the build's variants are not the ones this test knows"
    assert "sapphirerapids" not in variants
    assert {p.name: amx_instructions(p) for p in libraries} == {p.name: 0 for p in libraries}


def test_each_library_looks_for_its_dependencies_next_to_itself_only() -> None:
    runpaths = {}
    for library in sorted(build().glob("lib*.so")):
        dynamic = subprocess.run(
            ["readelf", "-d", str(library)], check=True, capture_output=True, text=True
        ).stdout
        runpaths[library.name] = re.findall(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", dynamic)
    assert runpaths and runpaths == {name: ["$ORIGIN"] for name in runpaths}


def expected_variant(flags: set[str]) -> str:
    allowed = [v for v, needs in REQUIRES.items() if needs <= flags]
    return max(allowed, key=lambda v: len(REQUIRES[v]))


def mapped_cpu_backends(pid: int) -> set[str]:
    """The CPU back-end libraries mapped by a process and its descendants."""
    found: set[str] = set()
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            maps = Path(f"/proc/{p}/maps").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # it exited meanwhile
            continue
        found |= set(re.findall(r"\S*libggml-cpu[^/\s]*\.so\S*", maps))
    return found


def test_the_server_runs_the_best_variant_this_cpu_allows(server: Server) -> None:
    user = server.create_key("cpu-variant")
    r = httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {user}"},
        timeout=60,
        json={
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0
    flags = cpu_flags()
    want = expected_variant(flags)
    assert mapped_cpu_backends(server.process.pid) == {str(build() / f"libggml-cpu-{want}.so")}
    if "avx512f" in flags:
        assert "avx512f" in REQUIRES[want]
    assert f"llama.cpp CPU back-end: {want} " in server.log.read_text()


@pytest.mark.parametrize(
    ("flags", "variant"),
    [
        (set(), "x64"),
        ({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}, "haswell"),
        (_HASWELL | {"avx_vnni"}, "alderlake"),
        (_AVX512 | {"avx_vnni", "avx512_vnni"}, "cascadelake"),
        (REQUIRES["zen4"] | {"amx_tile", "amx_int8", "avx_vnni"}, "zen4"),
    ],
)
def test_the_oracle_itself(flags: set[str], variant: str) -> None:
    assert expected_variant(flags) == variant
