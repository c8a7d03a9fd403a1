"""Settings come from defaults, a YAML file and SOVLLM_* variables; bad ones stop start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sovllm.config import ConfigError, load_settings


def test_defaults_bind_loopback_with_the_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOVLLM_CONFIG", raising=False)
    s = load_settings()
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.model == "smollm2-135m-instruct"
    assert s.engine.slots >= 1


def test_env_overrides_yaml_and_flags_override_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sovllm.yaml"
    cfg.write_text("port: 9001\nengine:\n  slots: 4\n  context_per_slot: 512\n")
    assert load_settings(cfg).engine.slots == 4
    monkeypatch.setenv("SOVLLM_ENGINE__SLOTS", "6")
    monkeypatch.setenv("SOVLLM_DATA_DIR", str(tmp_path / "d"))
    s = load_settings(cfg)
    assert (s.port, s.engine.slots, s.engine.context_per_slot) == (9001, 6, 512)
    assert s.data_dir == tmp_path / "d"
    assert load_settings(cfg, port=9100).port == 9100


@pytest.mark.parametrize(
    ("yaml_text", "env", "named"),
    [
        ("engine:\n  slots: 0\n", {}, "engine.slots"),
        ("", {"SOVLLM_PORT": "eighty"}, "port"),
        ("colour: blue\n", {}, "colour"),
        ("log_level: loud\n", {}, "log_level"),
    ],
)
def test_a_bad_setting_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, env: dict[str, str], named: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"'{named}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_or_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def _sovllm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_cli_version() -> None:
    out = _sovllm("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("sovllm ")


def test_serve_with_a_bad_setting_prints_one_line_and_exits(tmp_path: Path) -> None:
    out = _sovllm("serve", env={"SOVLLM_ENGINE__SLOTS": "-3", "SOVLLM_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "engine.slots" in lines[0] and "SOVLLM_ENGINE__SLOTS" in lines[0]
    assert "Traceback" not in out.stderr


def test_serve_with_an_unknown_model_names_it(tmp_path: Path) -> None:
    out = _sovllm("serve", "--model", "smollm3", env={"SOVLLM_DATA_DIR": str(tmp_path)})
    assert out.returncode != 0
    assert "smollm3" in out.stderr and "smollm2-135m-instruct" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_with_a_missing_gguf_names_the_file(tmp_path: Path) -> None:
    out = _sovllm(
        "serve", "--model", str(tmp_path / "x.gguf"), env={"SOVLLM_DATA_DIR": str(tmp_path)}
    )
    assert out.returncode != 0
    assert "x.gguf" in out.stderr and "does not exist" in out.stderr
