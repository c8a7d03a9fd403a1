"""The default model is derived from the shipped file at first start, with both hashes on
record, reused while it matches, and derived again when it does not (engines/derived.py).

These run llama.cpp's real quantizer on the real shipped file (about a second each)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sovllm.config import load_settings
from sovllm.engines.catalog import ModelNotFoundError, resolve_model, resolve_tokenizer
from sovllm.engines.derived import derived_from, provenance_path

SHIPPED = resolve_tokenizer("smollm2-135m-instruct")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_resolve_derives_f16_and_records_both_hashes(tmp_path: Path) -> None:
    source = resolve_model("smollm2-135m-instruct", tmp_path)
    assert source.path == tmp_path / "SmolLM2-135M-Instruct.F16.gguf"
    assert source.derived_from == SHIPPED
    doc = json.loads(provenance_path(source.path).read_text())
    assert doc["format"] == "F16"
    assert doc["sha256"] == sha256(source.path)
    assert doc["derived_from"] == {"path": str(SHIPPED), "sha256": sha256(SHIPPED)}
    # F16 holds each weight in 2 bytes: bigger than the 4.5-bit Q4_1 it came from.
    assert source.path.stat().st_size > 2 * SHIPPED.stat().st_size
    # A path to the derived file still knows where it came from (a worker is given the path).
    by_path = resolve_model(str(source.path))
    assert by_path.derived_from == SHIPPED
    assert derived_from(source.path) == (SHIPPED, sha256(SHIPPED))


def test_a_second_start_reuses_the_file(tmp_path: Path) -> None:
    first = resolve_model("smollm2-135m-instruct-q8_0", tmp_path).path
    made = first.stat().st_mtime_ns
    again = resolve_model("smollm2-135m-instruct-q8_0", tmp_path).path
    assert again == first and first.stat().st_mtime_ns == made


def test_a_file_that_no_longer_matches_is_derived_again(tmp_path: Path) -> None:
    path = resolve_model("smollm2-135m-instruct-q8_0", tmp_path).path
    good = sha256(path)
    with path.open("r+b") as fh:  # one flipped byte in the tensor data
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert sha256(path) != good
    assert resolve_model("smollm2-135m-instruct-q8_0", tmp_path).path == path
    assert sha256(path) == good


def test_the_shipped_format_is_served_as_shipped(tmp_path: Path) -> None:
    source = resolve_model("smollm2-135m-instruct-q4_1", tmp_path)
    assert source.path == SHIPPED and source.derived_from is None
    assert list(tmp_path.iterdir()) == []


def test_two_processes_starting_at_once_derive_one_file(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from sovllm.engines.catalog import resolve_model;"
        "print(resolve_model('smollm2-135m-instruct-q8_0', Path(sys.argv[1])).path)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0]
    assert len(paths) == 1
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == [
        "SmolLM2-135M-Instruct.Q8_0.gguf",
        "SmolLM2-135M-Instruct.Q8_0.gguf.json",
        "SmolLM2-135M-Instruct.Q8_0.gguf.lock",
    ]
    assert json.loads((tmp_path / made[1]).read_text())["sha256"] == sha256(tmp_path / made[0])


def test_an_unwritable_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "a-file"  # root writes anywhere: a file in the way instead
        blocked.write_text("")
        folder = blocked / "models"
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    with pytest.raises(ModelNotFoundError, match=r"cannot derive SmolLM2-135M-Instruct\.F16\.gguf"):
        resolve_model("smollm2-135m-instruct", folder)


def test_settings_put_derived_files_under_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOVLLM_MODEL_DIR", raising=False)
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.model_folder == tmp_path / "data" / "models"
    assert settings.resolve_model().path.parent == tmp_path / "data" / "models"
    shared = load_settings(data_dir=tmp_path / "data", model_dir=tmp_path / "shared")
    assert shared.model_folder == tmp_path / "shared"


def test_every_folder_it_makes_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "models"
    resolve_model("smollm2-135m-instruct-q8_0", folder)
    for made in (tmp_path / "data", folder):
        assert made.stat().st_mode & 0o777 == 0o700, made


def test_a_dry_run_names_the_derived_file_and_makes_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOVLLM_MODEL_DIR"}
    env["SOVLLM_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--dry-run", "--replicas", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "data" / "models" / "SmolLM2-135M-Instruct.F16.gguf") in done.stdout
    assert not (tmp_path / "data").exists()
