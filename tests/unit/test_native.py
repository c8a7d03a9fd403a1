"""native.py: which llama.cpp build a process loads, read back from its own mappings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sovllm.engines.llamacpp import native


def fake_build(prefix: Path) -> Path:
    folder = prefix / "lib" / native.BUILD_LINK
    folder.mkdir(parents=True)
    (folder / "libllama.so").write_bytes(b"")
    return folder


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """As at a process's start: llama_cpp not imported, no LLAMA_CPP_LIB_PATH."""
    # Set, then deleted: monkeypatch then restores what was there, whatever the test sets.
    monkeypatch.setenv(native.LIB_PATH_ENV, "")
    monkeypatch.delenv(native.LIB_PATH_ENV)
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    return monkeypatch


def test_the_installed_build_is_preferred(
    fresh_process: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = fake_build(tmp_path)
    native.prefer_installed_build(str(tmp_path))
    assert native.installed_build(str(tmp_path)) == folder

    assert os.environ[native.LIB_PATH_ENV] == str(folder)


def test_an_operators_choice_is_kept(fresh_process: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_build(tmp_path)
    fresh_process.setenv(native.LIB_PATH_ENV, "/opt/their/llama")
    native.prefer_installed_build(str(tmp_path))

    assert os.environ[native.LIB_PATH_ENV] == "/opt/their/llama"


def test_too_late_once_llama_cpp_is_imported(
    fresh_process: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_build(tmp_path)
    fresh_process.setitem(sys.modules, "llama_cpp", sys)  # any module: it is only looked up
    native.prefer_installed_build(str(tmp_path))

    assert native.LIB_PATH_ENV not in os.environ


def test_no_build_no_change(fresh_process: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "lib" / native.BUILD_LINK).mkdir(parents=True)  # a folder without libllama
    native.prefer_installed_build(str(tmp_path))

    assert native.LIB_PATH_ENV not in os.environ
    assert native.installed_build(str(tmp_path)) is None


MAPS = """\
7f0000000000-7f0000001000 r--p 00000000 00:00 0
7f0000001000-7f0000002000 r-xp 00000000 08:01 12 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000002000-7f0000003000 r-xp 00000000 08:01 13 {path}
"""


@pytest.mark.parametrize(
    ("path", "variant"),
    [
        ("/c/llama.cpp/lib/libggml-cpu-zen4.so", "zen4"),
        ("/v/site-packages/llama_cpp/lib/libggml-cpu.so.0.25.3", "built-in"),
        ("/weird dir/lib/libggml-cpu-haswell.so", "haswell"),
    ],
)
def test_the_mapped_cpu_backend_is_read_back(tmp_path: Path, path: str, variant: str) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS.format(path=path))
    assert native.cpu_backend(maps) == native.CpuBackend(path, variant)


def test_no_cpu_backend_mapped(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS.format(path="/usr/lib/libm.so.6"))
    assert native.cpu_backend(maps) is None
    assert native.cpu_backend(tmp_path / "missing") is None


def test_a_build_without_variants_is_left_to_register_itself(tmp_path: Path) -> None:
    # No libggml-cpu-*.so next to libllama: nothing is opened (there is no libggml.so here).
    native.load_cpu_backend(str(tmp_path / "libllama.so"))
